use super::*;
use crate::config::Verb;
use proptest::prelude::*;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cidrs_parse_with_or_without_a_prefix() {
    assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7/32");
    assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
    assert_eq!(cidr("::1").to_string(), "::1/128");
    assert_eq!(cidr("0.0.0.0/0").prefix(), 0);
    assert_eq!(cidr("::/0").prefix(), 0);
    assert_eq!(cidr("10.0.0.0/008").prefix(), 8);
}

#[test]
fn malformed_cidrs_are_rejected() {
    for s in [
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "010.0.0.0/8",
        "10.0.0.0 /8",
        " 10.0.0.0/8",
        "10.0.0/8",
        "fe80::1%eth0",
        "10.0.0.0/0008",
        "10.0.0.0/256",
        "host.example",
        "[::1]",
    ] {
        assert!(s.parse::<Cidr>().is_err(), "{s:?} accepted");
    }
}

#[test]
fn cidrs_with_host_bits_set_are_rejected_with_a_suggestion() {
    let e = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "host bits are set (did you mean 10.0.0.0/8?)"
    );
    assert!("2001:db8::1/32".parse::<Cidr>().is_err());
}

#[test]
fn cidr_membership() {
    let net = cidr("10.0.0.0/8");
    assert!(net.contains(ip("10.0.0.0")));
    assert!(net.contains(ip("10.255.255.255")));
    assert!(!net.contains(ip("11.0.0.0")));
    assert!(!net.contains(ip("9.255.255.255")));
    assert!(
        net.contains(ip("::ffff:10.1.2.3")),
        "IPv4-mapped IPv6 matches IPv4"
    );
    assert!(
        !net.contains(ip("::10.1.2.3")),
        "IPv4-compatible is not mapped"
    );
    assert!(!net.contains(ip("2001:db8::1")));
    assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
    assert!(cidr("::/0").contains(ip("2001:db8::1")));
    assert!(cidr("192.0.2.7").contains(ip("192.0.2.7")));
    assert!(!cidr("192.0.2.7").contains(ip("192.0.2.8")));
    assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
    assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::")));
    assert!(cidr("::ffff:0:0/96").contains(ip("192.0.2.1")));
    assert!(cidr("::1").contains(ip("::1")));
}

#[test]
fn verbs_and_cidrs_deserialize_from_config_strings() {
    let verbs: Vec<Verb> = serde_json::from_str(r#"["sync","status","help"]"#).unwrap();
    assert_eq!(verbs, [Verb::Sync, Verb::Status, Verb::Help]);
    let nets: Vec<Cidr> = serde_json::from_str(r#"["10.0.0.0/8","::1"]"#).unwrap();
    assert_eq!(nets, [cidr("10.0.0.0/8"), cidr("::1/128")]);
    assert!(serde_json::from_str::<Cidr>(r#""10.0.0.1/8""#).is_err());
    assert!(serde_json::from_str::<Verb>(r#""Sync""#).is_err());
}

proptest! {
    /// A CIDR built from any address and prefix contains that address
    /// and round-trips through Display.
    #[test]
    fn cidr_contains_its_own_addresses(raw in any::<u128>(), v6 in any::<bool>(), prefix in 0u8..=128) {
        let (addr, prefix) = if v6 {
            (IpAddr::V6(Ipv6Addr::from(raw)), prefix)
        } else {
            (IpAddr::V4(Ipv4Addr::from(raw as u32)), prefix % 33)
        };
        let net = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(a, prefix)),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(a, prefix)),
        };
        let c: Cidr = format!("{net}/{prefix}").parse().unwrap();
        prop_assert!(c.contains(addr));
        prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
    }
}
