//! Durations in the config: a number of seconds (`3600`) or a number with a
//! unit (`"90s"`, `"30m"`, `"24h"`, `"7d"`). One parser for every key that
//! takes one.

use serde::Deserialize;
use toml::Spanned;

use super::raw::Source;
use crate::error::Result;

/// A duration as written: seconds, or text with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Secs(i64),
    Text(String),
    /// Anything else (a float, a table): refused with the key's name.
    Other(#[allow(dead_code)] toml::Value),
}

/// The units a duration may carry, with their length in seconds.
pub const UNITS: &[(&str, u64)] = &[("s", 1), ("m", 60), ("h", 3600), ("d", 86400)];

/// `"24h"` → 86400; a bare number of seconds is accepted as text too.
pub fn parse(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.len() > 12 {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult = if unit.is_empty() {
        1
    } else {
        UNITS.iter().find(|(u, _)| *u == unit)?.1
    };
    n.checked_mul(mult)
}

/// Checks `v` (key `key`): at least `min` seconds. `None` gives `default`.
pub(super) fn secs(
    src: &Source,
    v: &Option<Spanned<RawDuration>>,
    key: &str,
    min: u64,
    default: Option<u64>,
) -> Result<Option<u64>> {
    let Some(v) = v else { return Ok(default) };
    let n = match v.get_ref() {
        RawDuration::Secs(n) => u64::try_from(*n).ok(),
        RawDuration::Text(t) => parse(t),
        RawDuration::Other(_) => None,
    };
    match n {
        Some(n) if n >= min => Ok(Some(n)),
        Some(_) => src.err(v.span(), key, format!("must be at least {min} seconds")),
        None => src.err(
            v.span(),
            key,
            "want seconds (3600) or a number with a unit: \"90s\", \"30m\", \"24h\", \"7d\"",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units() {
        assert_eq!(parse("90"), Some(90));
        assert_eq!(parse("90s"), Some(90));
        assert_eq!(parse("30m"), Some(1800));
        assert_eq!(parse("24h"), Some(86400));
        assert_eq!(parse("7d"), Some(604800));
        for bad in [
            "",
            "h",
            "1w",
            "-1s",
            "1.5h",
            "1 h",
            "24hh",
            "99999999999999s",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
