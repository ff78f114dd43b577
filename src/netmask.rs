//! Temporary: replaced by policy::Cidr when the gate lands.
pub fn check(s: &str) -> Result<(), String> {
    let (ip, prefix) = s.split_once('/').unwrap_or((s, "128"));
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not an address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max || !s.contains('/') => Ok(()),
        _ => Err(format!("{s:?}: bad prefix length")),
    }
}
