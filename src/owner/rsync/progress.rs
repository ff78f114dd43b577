//! Reading rsync's `--info=progress2` lines: the whole transfer's bytes so
//! far, its rate and rsync's time estimate, and how many files of the list
//! are checked. rsync rewrites one terminal line with `\r`; the child's
//! reader splits there ([`crate::sys::child`]), so each update arrives here
//! as one line:
//!
//! ```text
//!       1966080  32%    1.76MB/s    0:00:02
//!       6000000  99%    1.93MB/s    0:00:02 (xfr#1, to-chk=3/5)
//! ```
//!
//! Bytes, a percentage (of the size of the files listed so far), the rate
//! (units of 1024 with `--no-human-readable`), then a time: the estimated
//! time left, except on a line that ends a file (with the `(xfr#N, …)`
//! suffix), where it is the time that file took. `to-chk=L/T`: L of the T
//! files listed are still to be checked; `ir-chk` says the same while the
//! incremental file list is still growing.

/// One progress2 update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// Bytes of file data transferred so far in this rsync run.
    pub bytes: u64,
    /// Bytes per second.
    pub rate: u64,
    /// rsync's estimate of the seconds left (not on lines ending a file).
    pub eta: Option<u64>,
    /// `(left, total, final)` files to check: `final` is false while the
    /// file list is still growing (`ir-chk`).
    pub to_check: Option<(u64, u64, bool)>,
}

fn number(s: &str) -> Option<u64> {
    let digits: String = s.chars().filter(|c| *c != ',' && *c != '.').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// "1.76MB/s" → bytes per second.
fn rate(s: &str) -> Option<u64> {
    let s = s.strip_suffix("/s")?;
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let mult: f64 = match unit {
        "B" => 1.0,
        "kB" | "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = n
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    Some((n * mult) as u64)
}

/// "0:00:26" (or "12:03:04", "123:00:00") → seconds.
fn hms(s: &str) -> Option<u64> {
    let mut parts = s.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || m.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, m, sec): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    (m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
}

/// "(xfr#5, to-chk=3/6)" → (left, total, final).
fn check(s: &str) -> Option<(u64, u64, bool)> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    let mut fields = inner.split(", ");
    fields.next()?.strip_prefix("xfr#")?;
    let chk = fields.next()?;
    let (kind, counts) = chk.split_once("-chk=")?;
    let fin = match kind {
        "to" => true,
        "ir" => false,
        _ => return None,
    };
    let (left, total) = counts.split_once('/')?;
    let (left, total) = (left.parse().ok()?, total.parse().ok()?);
    (left <= total).then_some((left, total, fin))
}

/// Parses one progress2 line; `None` for anything else (the stats,
/// itemized changes, messages).
pub fn parse(line: &str) -> Option<Update> {
    let mut w = line.split_whitespace();
    let bytes = number(w.next()?)?;
    let pct = w.next()?.strip_suffix('%')?;
    if pct.parse::<u8>().ok()? > 100 {
        return None;
    }
    let rate = rate(w.next()?)?;
    let time = hms(w.next()?)?;
    let rest: Vec<&str> = w.collect();
    let (eta, to_check) = if rest.is_empty() {
        (Some(time), None)
    } else {
        (None, Some(check(&rest.join(" "))?))
    };
    Some(Update {
        bytes,
        rate,
        eta,
        to_check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress2_lines_are_parsed() {
        assert_eq!(
            parse("        1966080  32%    1.76MB/s    0:00:02  "),
            Some(Update {
                bytes: 1_966_080,
                rate: (1.76 * 1024.0 * 1024.0) as u64,
                eta: Some(2),
                to_check: None
            })
        );
        assert_eq!(
            parse("        6000000  99%    1.93MB/s    0:00:02 (xfr#1, to-chk=3/5)"),
            Some(Update {
                bytes: 6_000_000,
                rate: (1.93 * 1024.0 * 1024.0) as u64,
                eta: None,
                to_check: Some((3, 5, true))
            })
        );
        // Grouped digits (-h), the incremental list, hours, kB and GB.
        let u = parse(" 1,238,099,968  38%  110.00GB/s  123:04:05 (xfr#1,234, ir-chk=1000/2000)");
        assert_eq!(
            u,
            Some(Update {
                bytes: 1_238_099_968,
                rate: 110 * (1 << 30),
                eta: None,
                to_check: Some((1000, 2000, false))
            })
        );
        assert_eq!(parse("32768   0%    0.00kB/s    0:00:00").unwrap().rate, 0);
        assert_eq!(parse("1 0% 2.50kB/s 1:02:03").unwrap().eta, Some(3723));
    }

    #[test]
    fn anything_else_is_not_progress() {
        for line in [
            "",
            "Number of files: 6 (reg: 5, dir: 1)",
            "Total file size: 9000012 bytes",
            ">f+++++++++ big.iso",
            "sent 6001742 bytes  received 92 bytes  1714809.71 bytes/sec",
            "rsync: [sender] send_files failed to open \"x\": Permission denied (13)",
            "123 101% 1.00MB/s 0:00:01",
            "123 50% 1.00XB/s 0:00:01",
            "123 50% 1.00MB/s 0:61:01",
            "123 50% 1.00MB/s 0:00:01 (xfr#1, to-chk=7/5)",
            "123 50% 1.00MB/s 0:00:01 trailing words",
            "123 50% -1.00MB/s 0:00:01",
            "1,2x3 50% 1.00MB/s 0:00:01",
        ] {
            assert_eq!(parse(line), None, "{line:?}");
        }
    }
}
