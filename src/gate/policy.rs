//! Authorization: may this key make this [`Request`] from this address?
//!
//! Pure functions over a [`KeyPolicy`] (one per SSH key, from the
//! configuration) and the client address from `SSH_CONNECTION`.
//!
//! Rules, in the order they are checked:
//!
//! 1. `help` is always allowed.
//! 2. If the key's `from` list is non-empty, the client address must be in
//!    one of its networks. A missing or unparsable address is refused.
//! 3. The verb must be in the key's `verbs`.
//! 4. Mirrors: a named mirror must be one of the key's `mirrors` (an unknown
//!    mirror is refused exactly like a forbidden one, so clients cannot probe
//!    which mirrors exist). `sync` without a name means the key's only mirror
//!    and is ambiguous if it has several; `sync:all` and `status` without a
//!    name mean all of the key's mirrors. A key without mirrors can only run
//!    `help`.
//!
//! Refusals here exit 77 and their message says what the key may do.
//! [`help_text`] lists exactly the commands that [`authorize`] permits.
//!
//! Mirror names in a policy are expected to be valid [`crate::gate::request::Name`]s
//! (the configuration loader should check); this module only compares them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::gate::request::{escape_for_log, Name, Refusal, Request, Target};

/// What a key may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Sync,
    Status,
    Help,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Sync => "sync",
            Verb::Status => "status",
            Verb::Help => "help",
        }
    }
}

/// The permissions of one SSH key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The key's name (the `--key NAME` of the forced command).
    pub key: String,
    /// Verbs the key may use. `help` is allowed whether listed or not.
    pub verbs: Vec<Verb>,
    /// Mirrors the key may sync and see.
    pub mirrors: Vec<String>,
    /// Networks the key may be used from; empty means anywhere.
    pub from: Vec<Cidr>,
}

/// What the caller should do once a request is authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Queue syncs of these mirrors (non-empty, no duplicates, policy order).
    Sync {
        mirrors: Vec<String>,
    },
    /// Show status of `mirror`, or of every mirror of the key when `None`.
    Status {
        mirror: Option<String>,
        json: bool,
    },
    Help,
}

/// An IPv4 or IPv6 network: an address and a prefix length.
///
/// Parsed from `ADDR/PREFIX` or a bare `ADDR` (a single host: /32 or /128).
/// Host bits must be zero (`10.1.2.3/8` is rejected as a likely typo for
/// `10.1.2.3` or `10.0.0.0/8`). IPv4 clients seen as IPv4-mapped IPv6
/// (`::ffff:10.1.2.3`) match IPv4 networks, and vice versa.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("not an IP address")]
    Address,
    #[error("prefix length must be a number from 0 to {max}")]
    Prefix { max: u8 },
    #[error("host bits are set (did you mean {0}?)")]
    HostBits(Cidr),
}

impl Cidr {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses are
    /// treated as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix) == net,
            (IpAddr::V6(net), IpAddr::V4(ip)) => mask_v6(ip.to_ipv6_mapped(), self.prefix) == net,
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

fn mask_v4(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
}

fn mask_v6(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Address)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let digits = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
                match p.parse::<u8>() {
                    Ok(n) if digits && n <= max => n,
                    _ => return Err(CidrError::Prefix { max }),
                }
            }
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(a, prefix)),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(a, prefix)),
        };
        let cidr = Cidr {
            addr: network,
            prefix,
        };
        if network != addr {
            return Err(CidrError::HostBits(cidr));
        }
        Ok(cidr)
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The client address and port from `SSH_CONNECTION`
/// (`"client_ip client_port server_ip server_port"`, single spaces).
/// Anything malformed, including port 0, gives `None`.
pub fn client_from_ssh_connection(v: Option<&[u8]>) -> Option<(IpAddr, u16)> {
    let fields: Vec<&str> = std::str::from_utf8(v?).ok()?.split(' ').collect();
    let [client_ip, client_port, server_ip, server_port] = fields.as_slice() else {
        return None;
    };
    fn port(s: &str) -> Option<u16> {
        let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        s.parse().ok().filter(|&p| digits && p != 0)
    }
    server_ip.parse::<IpAddr>().ok()?;
    port(server_port)?;
    Some((client_ip.parse().ok()?, port(client_port)?))
}

/// Decides whether `policy` allows `req` from `client`; see the module docs.
pub fn authorize(
    req: &Request,
    policy: &KeyPolicy,
    client: Option<IpAddr>,
) -> Result<Action, Refusal> {
    let verb = match req {
        Request::Help => return Ok(Action::Help),
        Request::Sync { .. } => Verb::Sync,
        Request::Status { .. } => Verb::Status,
    };
    if !policy.from.is_empty()
        && !client.is_some_and(|ip| policy.from.iter().any(|net| net.contains(ip)))
    {
        return Err(Refusal::NetworkNotAllowed {
            key: esc(&policy.key),
            client,
        });
    }
    if !policy.verbs.contains(&verb) {
        return Err(Refusal::VerbNotAllowed {
            verb: verb.as_str(),
            may: may_summary(policy),
        });
    }
    let mirrors = key_mirrors(policy);
    let refuse = |mirror: Option<&Name>| Refusal::MirrorNotAllowed {
        verb: verb.as_str(),
        mirror: mirror.map(|n| n.as_str().to_owned()),
        may: may_summary(policy),
    };
    let allowed = |n: &Name| {
        mirrors
            .contains(&n.as_str())
            .then(|| n.as_str().to_owned())
            .ok_or_else(|| refuse(Some(n)))
    };
    if mirrors.is_empty() {
        return Err(refuse(None));
    }
    match req {
        Request::Sync { target, .. } => {
            let mirrors = match target {
                Target::Named(n) => vec![allowed(n)?],
                Target::All => owned(&mirrors),
                Target::Default if mirrors.len() == 1 => owned(&mirrors),
                Target::Default => {
                    return Err(Refusal::AmbiguousMirror {
                        key: esc(&policy.key),
                        mirrors: mirrors.iter().map(|m| esc(m)).collect(),
                    })
                }
            };
            Ok(Action::Sync { mirrors })
        }
        Request::Status { mirror, json } => Ok(Action::Status {
            mirror: mirror.as_ref().map(allowed).transpose()?,
            json: *json,
        }),
        Request::Help => Ok(Action::Help),
    }
}

/// Usage text for this key: exactly the commands it may run.
pub fn help_text(policy: &KeyPolicy) -> String {
    let mirrors = key_mirrors(policy);
    let may = |v| policy.verbs.contains(&v) && !mirrors.is_empty();
    let mut lines: Vec<(&str, String)> = Vec::new();
    let list = mirrors
        .iter()
        .map(|m| esc(m))
        .collect::<Vec<_>>()
        .join(", ");
    if may(Verb::Sync) {
        if mirrors.len() == 1 {
            lines.push(("sync", format!("sync {list}")));
        }
        lines.push(("sync MIRROR", "sync one mirror".into()));
        lines.push(("sync:all", "sync all your mirrors".into()));
        lines.push(("sync:archive:MIRROR", "ftpsync push: sync MIRROR".into()));
        if mirrors.len() == 1 {
            lines.push(("sync:stage1", format!("ftpsync push: sync {list}")));
            lines.push(("sync:stage2", format!("ftpsync push: sync {list}")));
        }
    }
    if may(Verb::Status) {
        lines.push((
            "status [MIRROR] [--json]",
            "show sync state (default: all your mirrors)".into(),
        ));
    }
    lines.push(("help", "show this text".into()));

    let mut out = format!("syncgate: commands for key '{}':\n", esc(&policy.key));
    for (usage, what) in lines {
        out.push_str(&format!("  {usage:<26}{what}\n"));
    }
    if !mirrors.is_empty() {
        out.push_str(&format!("MIRROR is one of: {list}\n"));
    }
    out
}

/// One line saying what the key may do, e.g.
/// `key 'jenkins' may: sync debian-cd, status debian-cd, help`.
pub fn may_summary(policy: &KeyPolicy) -> String {
    let mirrors = key_mirrors(policy);
    let list = match mirrors.as_slice() {
        [one] => esc(one),
        many => format!(
            "{{{}}}",
            many.iter().map(|m| esc(m)).collect::<Vec<_>>().join(",")
        ),
    };
    let mut parts: Vec<String> = [Verb::Sync, Verb::Status]
        .into_iter()
        .filter(|v| policy.verbs.contains(v) && !mirrors.is_empty())
        .map(|v| format!("{} {list}", v.as_str()))
        .collect();
    parts.push("help".into());
    format!("key '{}' may: {}", esc(&policy.key), parts.join(", "))
}

/// The key's mirrors without duplicates, in policy order.
fn key_mirrors(policy: &KeyPolicy) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for m in &policy.mirrors {
        if !out.contains(&m.as_str()) {
            out.push(m);
        }
    }
    out
}

fn owned(mirrors: &[&str]) -> Vec<String> {
    mirrors.iter().map(|m| m.to_string()).collect()
}

/// Policy text is trusted, but is escaped like client text anyway so that
/// messages stay one printable line.
fn esc(s: &str) -> String {
    escape_for_log(s.as_bytes(), 128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::request::{parse, tests::valid_command};
    use proptest::prelude::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(verbs: &[Verb], mirrors: &[&str], from: &[&str]) -> KeyPolicy {
        KeyPolicy {
            key: "jenkins".into(),
            verbs: verbs.to_vec(),
            mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
            from: from.iter().map(|c| cidr(c)).collect(),
        }
    }

    fn jenkins() -> KeyPolicy {
        policy(&[Verb::Sync, Verb::Status], &["debian-cd"], &[])
    }

    fn run(cmd: &str, p: &KeyPolicy, client: Option<&str>) -> Result<Action, Refusal> {
        let req = parse(Some(cmd.as_bytes())).expect("test command parses");
        authorize(&req, p, client.map(ip))
    }

    #[track_caller]
    fn refused(cmd: &str, p: &KeyPolicy, client: Option<&str>, reason: &str) -> String {
        let r = run(cmd, p, client).expect_err(cmd);
        assert_eq!(r.reason(), reason, "{cmd}: {r}");
        assert_eq!(r.exit_code(), 77, "{cmd}");
        r.to_string()
    }

    fn sync(ms: &[&str]) -> Action {
        Action::Sync {
            mirrors: ms.iter().map(|m| m.to_string()).collect(),
        }
    }

    // ---- authorize ----

    #[test]
    fn help_is_always_allowed() {
        let nothing = policy(&[], &[], &["10.0.0.0/8"]);
        assert_eq!(run("help", &nothing, None), Ok(Action::Help));
        assert_eq!(run("help", &nothing, Some("192.0.2.1")), Ok(Action::Help));
    }

    #[test]
    fn a_key_with_one_mirror_syncs_it_by_default() {
        let p = jenkins();
        assert_eq!(run("sync", &p, None), Ok(sync(&["debian-cd"])));
        assert_eq!(run("sync debian-cd", &p, None), Ok(sync(&["debian-cd"])));
        assert_eq!(run("sync:all", &p, None), Ok(sync(&["debian-cd"])));
        assert_eq!(run("sync:stage1", &p, None), Ok(sync(&["debian-cd"])));
        assert_eq!(run("sync:stage2", &p, None), Ok(sync(&["debian-cd"])));
        assert_eq!(
            run("sync:archive:debian-cd", &p, None),
            Ok(sync(&["debian-cd"]))
        );
    }

    #[test]
    fn sync_without_a_name_is_ambiguous_for_a_key_with_several_mirrors() {
        let p = policy(&[Verb::Sync], &["debian", "ubuntu"], &[]);
        let msg = refused("sync", &p, None, "ambiguous-mirror");
        assert!(msg.contains("debian, ubuntu"), "{msg}");
        refused("sync:stage1", &p, None, "ambiguous-mirror");
        assert_eq!(run("sync ubuntu", &p, None), Ok(sync(&["ubuntu"])));
        assert_eq!(run("sync:all", &p, None), Ok(sync(&["debian", "ubuntu"])));
    }

    #[test]
    fn duplicate_mirrors_in_the_policy_count_once() {
        let p = policy(&[Verb::Sync], &["debian", "debian"], &[]);
        assert_eq!(run("sync", &p, None), Ok(sync(&["debian"])));
        assert_eq!(run("sync:all", &p, None), Ok(sync(&["debian"])));
    }

    #[test]
    fn a_key_without_mirrors_may_only_ask_for_help() {
        let p = policy(&[Verb::Sync, Verb::Status], &[], &[]);
        for cmd in [
            "sync",
            "sync:all",
            "sync:stage1",
            "sync debian",
            "status",
            "status --json",
        ] {
            let msg = refused(cmd, &p, None, "mirror-not-allowed");
            assert!(msg.ends_with("key 'jenkins' may: help"), "{msg}");
        }
    }

    #[test]
    fn forbidden_and_unknown_mirrors_are_indistinguishable() {
        let p = policy(&[Verb::Sync, Verb::Status], &["debian"], &[]);
        let forbidden = refused("sync ubuntu", &p, None, "mirror-not-allowed");
        let unknown = refused("sync no-such-mirror", &p, None, "mirror-not-allowed");
        assert_eq!(
            forbidden.replace("ubuntu", "X"),
            unknown.replace("no-such-mirror", "X")
        );
        refused("sync:archive:ubuntu", &p, None, "mirror-not-allowed");
        refused("status ubuntu", &p, None, "mirror-not-allowed");
    }

    #[test]
    fn status_covers_the_keys_mirrors_or_one_allowed_mirror() {
        let p = policy(&[Verb::Status], &["debian", "ubuntu"], &[]);
        assert_eq!(
            run("status", &p, None),
            Ok(Action::Status {
                mirror: None,
                json: false
            })
        );
        assert_eq!(
            run("status --json ubuntu", &p, None),
            Ok(Action::Status {
                mirror: Some("ubuntu".into()),
                json: true
            })
        );
        refused("status fedora", &p, None, "mirror-not-allowed");
    }

    #[test]
    fn verbs_must_be_granted_and_the_refusal_says_what_the_key_may_do() {
        let status_only = policy(&[Verb::Status], &["debian-cd"], &[]);
        let msg = refused("sync", &status_only, None, "verb-not-allowed");
        assert_eq!(
            msg,
            "'sync' is not permitted; key 'jenkins' may: status debian-cd, help"
        );
        let sync_only = policy(&[Verb::Sync], &["debian-cd"], &[]);
        refused("status", &sync_only, None, "verb-not-allowed");
        let p = policy(&[Verb::Help], &["a", "b"], &[]);
        let msg = refused("sync a", &p, None, "verb-not-allowed");
        assert!(msg.ends_with("key 'jenkins' may: help"), "{msg}");
        // The example from the design: a sync+status key refused a mirror.
        let msg = refused("sync other", &jenkins(), None, "mirror-not-allowed");
        assert!(
            msg.contains("key 'jenkins' may: sync debian-cd, status debian-cd"),
            "{msg}"
        );
        let two = policy(&[Verb::Sync], &["a", "b"], &[]);
        let msg = refused("sync c", &two, None, "mirror-not-allowed");
        assert!(msg.ends_with("may: sync {a,b}, help"), "{msg}");
    }

    #[test]
    fn the_from_list_restricts_where_the_key_works() {
        let p = policy(&[Verb::Sync], &["debian"], &["10.0.0.0/8", "2001:db8::/32"]);
        assert!(run("sync", &p, Some("10.1.2.3")).is_ok());
        assert!(run("sync", &p, Some("::ffff:10.1.2.3")).is_ok());
        assert!(run("sync", &p, Some("2001:db8::7")).is_ok());
        let msg = refused("sync", &p, Some("192.0.2.1"), "network-not-allowed");
        assert!(msg.contains("192.0.2.1"), "{msg}");
        refused("sync", &p, Some("2001:db9::1"), "network-not-allowed");
        let msg = refused("sync", &p, None, "network-not-allowed");
        assert!(msg.contains("unknown address"), "{msg}");
        // Checked before verbs: a wrong network learns nothing more.
        refused("status", &p, Some("192.0.2.1"), "network-not-allowed");
    }

    #[test]
    fn an_empty_from_list_allows_any_address_even_an_unknown_one() {
        assert!(run("sync", &jenkins(), None).is_ok());
        assert!(run("sync", &jenkins(), Some("192.0.2.1")).is_ok());
    }

    #[test]
    fn policy_text_in_messages_is_escaped() {
        let mut p = policy(&[Verb::Status], &["a"], &[]);
        p.key = "evil\nkey\x1b".into();
        let msg = refused("sync", &p, None, "verb-not-allowed");
        assert!(msg.contains("evil\\x0akey\\x1b"), "{msg}");
        assert!(!help_text(&p).contains('\x1b'));
    }

    // ---- Cidr ----

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

    // ---- SSH_CONNECTION ----

    #[test]
    fn ssh_connection_gives_the_client_address_and_port() {
        let v4 = client_from_ssh_connection(Some(b"192.0.2.7 51234 198.51.100.1 22"));
        assert_eq!(v4, Some((ip("192.0.2.7"), 51234)));
        let v6 = client_from_ssh_connection(Some(b"2001:db8::7 40000 2001:db8::1 22"));
        assert_eq!(v6, Some((ip("2001:db8::7"), 40000)));
        let mapped = client_from_ssh_connection(Some(b"::ffff:10.1.2.3 1 ::1 22"));
        assert_eq!(mapped, Some((ip("::ffff:10.1.2.3"), 1)));
    }

    #[test]
    fn malformed_ssh_connection_gives_none() {
        let cases: &[&[u8]] = &[
            b"",
            b"192.0.2.7",
            b"192.0.2.7 51234 198.51.100.1",
            b"192.0.2.7 51234 198.51.100.1 22 extra",
            b"192.0.2.7  51234 198.51.100.1 22",
            b" 192.0.2.7 51234 198.51.100.1 22",
            b"192.0.2.7 51234 198.51.100.1 22\n",
            b"192.0.2.7\t51234 198.51.100.1 22",
            b"192.0.2.7 0 198.51.100.1 22",
            b"192.0.2.7 65536 198.51.100.1 22",
            b"192.0.2.7 +22 198.51.100.1 22",
            b"192.0.2.7 22 198.51.100.1 x",
            b"192.0.2.7 22 nowhere 22",
            b"host.example 22 198.51.100.1 22",
            b"fe80::1%eth0 22 fe80::2 22",
            b"\xff 22 198.51.100.1 22",
        ];
        for v in cases {
            assert_eq!(
                client_from_ssh_connection(Some(v)),
                None,
                "{:?}",
                escape_for_log(v, 80)
            );
        }
        assert_eq!(client_from_ssh_connection(None), None);
    }

    // ---- help_text ----

    #[test]
    fn help_text_for_a_single_mirror_key() {
        let text = help_text(&jenkins());
        assert!(
            text.starts_with("syncgate: commands for key 'jenkins':\n"),
            "{text}"
        );
        assert!(
            text.contains("  sync                      sync debian-cd\n"),
            "{text}"
        );
        assert!(text.contains("  status [MIRROR] [--json]"), "{text}");
        assert!(text.contains("MIRROR is one of: debian-cd\n"), "{text}");
    }

    #[test]
    fn help_text_for_a_help_only_key_lists_only_help() {
        let text = help_text(&policy(&[Verb::Help], &["a"], &[]));
        assert_eq!(
            text,
            "syncgate: commands for key 'jenkins':\n  help                      show this text\nMIRROR is one of: a\n"
        );
        assert!(!help_text(&policy(&[Verb::Sync, Verb::Status], &[], &[])).contains("sync "));
    }

    /// The usage column of each command line in the help text.
    fn usages(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("  "))
            .map(|l| l.split("  ").next().unwrap_or(""))
            .collect()
    }

    fn policy_strategy() -> impl Strategy<Value = KeyPolicy> {
        let verb = prop_oneof![Just(Verb::Sync), Just(Verb::Status), Just(Verb::Help)];
        let mirror = prop_oneof![Just("a"), Just("b"), Just("c-d")].prop_map(String::from);
        (
            proptest::collection::vec(verb, 0..4),
            proptest::collection::vec(mirror, 0..4),
        )
            .prop_map(|(verbs, mirrors)| KeyPolicy {
                key: "k".into(),
                verbs,
                mirrors,
                from: vec![],
            })
    }

    proptest! {
        /// help_text lists a command exactly when authorize permits it.
        #[test]
        fn help_text_matches_authorize(p in policy_strategy()) {
            let text = help_text(&p);
            let listed = usages(&text);
            let ok = |cmd: &str| run(cmd, &p, None).is_ok();
            let some = p.mirrors.first().map(String::as_str).unwrap_or("a");
            let checks = [
                ("sync", ok("sync")),
                ("sync MIRROR", ok(&format!("sync {some}"))),
                ("sync:all", ok("sync:all")),
                ("sync:archive:MIRROR", ok(&format!("sync:archive:{some}"))),
                ("sync:stage1", ok("sync:stage1")),
                ("sync:stage2", ok("sync:stage2")),
                ("status [MIRROR] [--json]", ok("status") && ok(&format!("status {some} --json"))),
                ("help", ok("help")),
            ];
            for (usage, allowed) in checks {
                prop_assert_eq!(listed.contains(&usage), allowed, "{}: {:?}", usage, p);
            }
            prop_assert_eq!(listed.len(), checks.iter().filter(|c| c.1).count());
        }

        /// Whatever is asked, an authorized sync or status never reaches a
        /// mirror outside the key's list, and refusals here exit 77.
        #[test]
        fn authorize_never_exceeds_the_policy(p in policy_strategy(), (cmd, req) in valid_command()) {
            let _ = cmd;
            match authorize(&req, &p, None) {
                Ok(Action::Sync { mirrors }) => {
                    prop_assert!(!mirrors.is_empty());
                    prop_assert!(p.verbs.contains(&Verb::Sync));
                    prop_assert!(mirrors.iter().all(|m| p.mirrors.contains(m)));
                }
                Ok(Action::Status { mirror, .. }) => {
                    prop_assert!(p.verbs.contains(&Verb::Status));
                    prop_assert!(mirror.iter().all(|m| p.mirrors.contains(m)));
                }
                Ok(Action::Help) => prop_assert_eq!(req, Request::Help),
                Err(r) => prop_assert_eq!(r.exit_code(), 77),
            }
        }

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
}
