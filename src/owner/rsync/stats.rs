//! Reading rsync's results: the `--stats` summary, the itemized changes
//! and the exit codes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub files_total: u64,
    pub files_transferred: u64,
    pub files_created: u64,
    pub files_deleted: u64,
    pub bytes_transferred: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Deletions rsync counted but did not do (`--max-delete` limit).
    pub deletes_skipped: u64,
    /// Lines of `--itemize-changes` output (changes, or with `--dry-run`
    /// changes that would be made).
    #[serde(default)]
    pub itemized: u64,
    /// The sender's file list by type, from "Number of files: N (reg: …,
    /// dir: …, link: …, dev: …, special: …)"; the transfer root "." is one
    /// of the directories. `None` when rsync printed no such line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<Kinds>,
    /// The sender's file list's size in bytes ("Total file size: N
    /// bytes"): the size of the tree this pass listed. `None` when rsync
    /// printed no such line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<u64>,
    /// Upstream symlinks rsync did not create (`--safe-links`), counted from
    /// its "ignoring unsafe symlink" lines (printed with `--info=name1`).
    #[serde(default)]
    pub unsafe_links: u64,
    /// Upstream devices, fifos and sockets rsync did not create, counted
    /// from its "skipping non-regular file" lines.
    #[serde(default)]
    pub skipped_special: u64,
}

/// Directory entries by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kinds {
    pub reg: u64,
    pub dir: u64,
    pub link: u64,
    /// Devices, fifos, sockets.
    pub other: u64,
}

/// "50,508 (reg: 50,005, dir: 503, link: 2)" → the counts by type; the
/// total must equal their sum.
fn kinds(rest: &str) -> Option<Kinds> {
    let (total, detail) = rest.split_once('(')?;
    let total = number(total, "")?;
    let detail = detail.trim_end().strip_suffix(')')?;
    let mut k = Kinds::default();
    for part in detail.split(", ") {
        let (label, n) = part.split_once(':')?;
        let n = number(n, "")?;
        match label.trim() {
            "reg" => k.reg = n,
            "dir" => k.dir = n,
            "link" => k.link = n,
            "dev" | "special" => k.other += n,
            _ => return None,
        }
    }
    (k.reg + k.dir + k.link + k.other == total).then_some(k)
}

/// Whether `line` is one of rsync's `--itemize-changes` lines:
/// `YXcstpoguax NAME` or `*deleting NAME`.
fn is_itemized(line: &str) -> bool {
    if line.starts_with("*deleting ") {
        return true;
    }
    let b = line.as_bytes();
    b.len() > 12
        && b"<>ch.*".contains(&b[0])
        && b"fdLDS".contains(&b[1])
        && b[2..11].iter().all(|c| b".+?cstpoguaxn ".contains(c))
        && b[11] == b' '
}

fn number(line: &str, label: &str) -> Option<u64> {
    let rest = line.strip_prefix(label)?.trim_start();
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

impl Stats {
    /// Feeds one line of rsync's stdout or stderr.
    pub fn feed(&mut self, line: &str) {
        if is_itemized(line) {
            self.itemized += 1;
            return;
        }
        if line.starts_with("ignoring unsafe symlink ") {
            self.unsafe_links += 1;
            return;
        }
        if line.starts_with("skipping non-regular file ") {
            self.skipped_special += 1;
            return;
        }
        let line = line.trim();
        if let Some(n) = number(line, "Number of files:") {
            self.files_total = n;
            self.listed = line.strip_prefix("Number of files:").and_then(|r| {
                if r.contains('(') {
                    kinds(r)
                } else {
                    None
                }
            });
        } else if let Some(n) = number(line, "Number of created files:") {
            self.files_created = n;
        } else if let Some(n) = number(line, "Number of deleted files:") {
            self.files_deleted = n;
        } else if let Some(n) = number(line, "Number of regular files transferred:") {
            self.files_transferred = n;
        } else if let Some(n) = number(line, "Total file size:") {
            self.total_size = Some(n);
        } else if let Some(n) = number(line, "Total transferred file size:") {
            self.bytes_transferred = n;
        } else if let Some(n) = number(line, "Total bytes received:") {
            self.bytes_received = n;
        } else if let Some(n) = number(line, "Total bytes sent:") {
            self.bytes_sent = n;
        } else if let Some(rest) =
            line.strip_prefix("Deletions stopped due to --max-delete limit (")
        {
            if let Some(n) = number(rest, "") {
                self.deletes_skipped = n;
            }
        }
    }
}

/// rsync's exit codes, in words (from rsync(1)); 128+N is how a death by
/// signal N is recorded.
pub fn describe(code: i32) -> String {
    if code > 128 {
        return format!("killed by signal {}", code - 128);
    }
    describe_code(code).to_string()
}

fn describe_code(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        4 => "requested action not supported",
        5 => "error starting client-server protocol",
        6 => "daemon unable to append to log-file",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        20 => "received SIGUSR1 or SIGINT",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_summary_is_parsed() {
        let out = "\
Number of files: 1,234 (reg: 1,000, dir: 234)
Number of created files: 12 (reg: 10, dir: 2)
Number of deleted files: 3
Number of regular files transferred: 10
Total file size: 99,999,999 bytes
Total transferred file size: 67,108,864 bytes
Total bytes sent: 1,024
Total bytes received: 67,200,000
Deletions stopped due to --max-delete limit (7 skipped)
";
        let mut s = Stats::default();
        out.lines().for_each(|l| s.feed(l));
        assert_eq!(
            s,
            Stats {
                files_total: 1234,
                files_transferred: 10,
                files_created: 12,
                files_deleted: 3,
                bytes_transferred: 67_108_864,
                bytes_received: 67_200_000,
                bytes_sent: 1024,
                deletes_skipped: 7,
                itemized: 0,
                listed: Some(Kinds {
                    reg: 1000,
                    dir: 234,
                    link: 0,
                    other: 0
                }),
                total_size: Some(99_999_999),
                unsafe_links: 0,
                skipped_special: 0,
            }
        );
    }

    #[test]
    fn itemized_changes_are_counted_and_stats_lines_are_not() {
        let mut s = Stats::default();
        for l in [
            ">f+++++++++ release-2/SHA256SUMS",
            "cL+++++++++ current -> release-2",
            ".d..t...... release-2/",
            "*deleting   old.sign",
            "Number of files: 3 (reg: 2, dir: 1)",
            "sent 94 bytes  received 20 bytes  228.00 bytes/sec",
        ] {
            s.feed(l);
        }
        assert_eq!(s.itemized, 4);
        assert_eq!(s.files_total, 3);
    }

    #[test]
    fn the_file_list_is_counted_by_type_and_skipped_entries_are_counted() {
        let mut s = Stats::default();
        for l in [
            "skipping non-regular file \"fifo\"",
            "ignoring unsafe symlink \"sub/bad\" -> \"../../etc/passwd\"",
            "Number of files: 6 (reg: 1, dir: 2, link: 2, special: 1)",
        ] {
            s.feed(l);
        }
        assert_eq!(
            s.listed,
            Some(Kinds {
                reg: 1,
                dir: 2,
                link: 2,
                other: 1
            })
        );
        assert_eq!((s.unsafe_links, s.skipped_special, s.itemized), (1, 1, 0));
        // An empty upstream: rsync prints no breakdown for "." alone.
        let mut s = Stats::default();
        s.feed("Number of files: 1 (dir: 1)");
        assert_eq!(s.listed.map(|k| k.dir), Some(1));
        // A breakdown that does not add up, or an unknown type, is no count.
        let mut s = Stats::default();
        s.feed("Number of files: 7 (reg: 1, dir: 2)");
        assert_eq!(s.listed, None);
        s.feed("Number of files: 3 (reg: 1, dir: 1, door: 1)");
        assert_eq!(s.listed, None);
    }
}
