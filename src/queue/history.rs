//! Run history: every finished run (a `died` one included) as one JSON line
//! in `state_dir/MIRROR.history.jsonl`, appended by the lock holder.
//!
//! The file is bounded: when a line would take it past `history_size`
//! bytes, it is first renamed to `MIRROR.history.jsonl.1` (replacing the
//! older one), so at most two files of about `history_size` each exist.
//! Each run is one `write(2)` of one whole line to a file opened with
//! `O_APPEND` and without following a symlink. A line cut short by a crash
//! is ended with a newline by the next writer, and readers skip any line
//! that is not a run record with a warning: a damaged history never stops
//! a sync or `status`.
//!
//! The state file's last [`HISTORY`] runs stay where they are (coalescing
//! reads them); this file is for people and monitoring.
//!
//! [`HISTORY`]: crate::queue::state::HISTORY

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek, SeekFrom, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::queue::statedir::StateDir;
use crate::run::RunRecord;

/// One line of the history file: the mirror's name, then the run record's
/// fields, as in the state file (README "Run history" lists them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub mirror: String,
    #[serde(flatten)]
    pub record: RunRecord,
}

/// The current history file of `mirror`.
pub fn path(sd: &StateDir, mirror: &str) -> PathBuf {
    sd.file(&format!("{mirror}.history.jsonl"))
}

/// The rotated (older) history file of `mirror`.
pub fn rotated_path(sd: &StateDir, mirror: &str) -> PathBuf {
    sd.file(&format!("{mirror}.history.jsonl.1"))
}

/// What [`append`] did besides appending.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// The file was full and was renamed to `….1` first.
    pub rotated: bool,
    /// The file did not end with a newline (a write cut short): the new
    /// line was started on a line of its own.
    pub repaired: bool,
}

/// Opens `path` for appending: created with mode 0640 (given to the state
/// dir's owner when root creates it), never through a symlink, never
/// blocking (a FIFO), and only if it is a regular file.
fn open_append(sd: &StateDir, path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::Internal(format!(
                    "{} is a symlink, which is not followed; remove it",
                    path.display()
                ))
            } else {
                Error::io(format!("cannot open {}", path.display()), e)
            }
        })?;
    let md = file.metadata().context(|| path.display().to_string())?;
    if !md.file_type().is_file() {
        return Err(Error::Internal(format!(
            "{} is not a regular file; remove it",
            path.display()
        )));
    }
    sd.adopt(&file, path)?;
    Ok(file)
}

/// Appends `record` to `mirror`'s history, rotating first when the file
/// would grow past `limit` bytes. Call it holding the mirror's lock.
pub fn append(sd: &StateDir, mirror: &str, record: &RunRecord, limit: u64) -> Result<Appended> {
    let entry = Entry {
        mirror: mirror.to_string(),
        record: record.clone(),
    };
    let mut line = serde_json::to_vec(&entry).expect("a run record serializes");
    line.push(b'\n');
    let path = path(sd, mirror);
    let mut file = open_append(sd, &path)?;
    let mut done = Appended::default();
    let mut len = file
        .metadata()
        .context(|| path.display().to_string())?
        .len();
    if len > 0 && len + line.len() as u64 > limit {
        drop(file);
        std::fs::rename(&path, rotated_path(sd, mirror))
            .context(|| format!("cannot rotate {}", path.display()))?;
        file = open_append(sd, &path)?;
        done.rotated = true;
        len = file
            .metadata()
            .context(|| path.display().to_string())?
            .len();
    }
    if len > 0 {
        let mut last = [0u8; 1];
        let read = file.read_exact_at(&mut last, len - 1);
        if read.is_ok() && last[0] != b'\n' {
            line.insert(0, b'\n');
            done.repaired = true;
        }
    }
    file.write_all(&line)
        .context(|| format!("cannot append to {}", path.display()))?;
    Ok(done)
}

/// Runs read from a mirror's history, oldest first, and what was skipped.
/// `T`: what is kept of each line: the whole [`Entry`] or, cheaper to
/// parse, [`Timing`].
#[derive(Debug)]
pub struct Read<T = Entry> {
    pub runs: Vec<T>,
    /// One sentence per file with lines that are not run records.
    pub warnings: Vec<String>,
}

impl<T> Default for Read<T> {
    fn default() -> Self {
        Read {
            runs: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// When a run started and ended and how it ended: what `status` and the
/// metrics take from the history (parsed without the rest of the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Timing {
    pub started: u64,
    pub ended: u64,
    pub result: crate::run::RunResult,
}

impl From<&RunRecord> for Timing {
    fn from(r: &RunRecord) -> Timing {
        Timing {
            started: r.started,
            ended: r.ended,
            result: r.result,
        }
    }
}

/// Reads up to `budget` bytes from the end of `path` (all of it when it is
/// shorter): a regular file, opened without following a symlink or
/// blocking. `None` when there is no such file. The first line is dropped
/// when reading started inside it.
fn tail(path: &Path, budget: u64) -> Result<Option<(Vec<u8>, bool)>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO)) => {
            return Err(Error::Internal(format!(
                "{} is not a regular file; remove it",
                path.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let md = file.metadata().context(|| path.display().to_string())?;
    if !md.file_type().is_file() {
        return Err(Error::Internal(format!(
            "{} is not a regular file; remove it",
            path.display()
        )));
    }
    let start = md.len().saturating_sub(budget);
    file.seek(SeekFrom::Start(start))
        .context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::with_capacity((md.len() - start) as usize);
    file.take(budget)
        .read_to_end(&mut bytes)
        .context(|| format!("cannot read {}", path.display()))?;
    let cut = start > 0;
    if cut {
        // Reading started inside a line: drop it.
        let next = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..next);
    }
    Ok(Some((bytes, cut)))
}

/// Parses history lines; an unreadable one is counted in `bad`.
fn parse<T: DeserializeOwned>(bytes: &[u8], runs: &mut Vec<T>, bad: &mut Vec<usize>) {
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // serde_json wants the whole line to be one value: a line cut
        // short, or two run together, is refused whatever `T` keeps.
        match serde_json::from_slice::<T>(line) {
            Ok(e) => runs.push(e),
            Err(_) => bad.push(i + 1),
        }
    }
}

/// Reads `mirror`'s history, oldest first: at most the last `budget`
/// bytes of the two files (`u64::MAX` for all of it). Lines that are not
/// run records are skipped with a warning.
pub fn read<T: DeserializeOwned>(sd: &StateDir, mirror: &str, budget: u64) -> Result<Read<T>> {
    let mut out = Read::default();
    let current = path(sd, mirror);
    let newer = tail(&current, budget)?;
    let used = newer.as_ref().map_or(0, |(b, _)| b.len() as u64);
    let mut parts = Vec::new();
    if newer.as_ref().is_none_or(|(_, cut)| !cut) && used < budget {
        let older = rotated_path(sd, mirror);
        if let Some((b, cut)) = tail(&older, budget - used)? {
            parts.push((older, b, cut));
        }
    }
    if let Some((b, cut)) = newer {
        parts.push((current, b, cut));
    }
    for (p, bytes, cut) in parts {
        let mut bad = Vec::new();
        parse(&bytes, &mut out.runs, &mut bad);
        if !bad.is_empty() {
            let lines: Vec<String> = bad.iter().take(5).map(|n| n.to_string()).collect();
            out.warnings.push(format!(
                "{}: skipped {} line(s) that are not run records ({} {}{}; a write cut short by a crash leaves one)",
                p.display(),
                bad.len(),
                if cut { "lines counted from where reading started:" } else { "line" },
                lines.join(", "),
                if bad.len() > 5 { ", …" } else { "" }
            ));
        }
    }
    Ok(out)
}

/// The last `n` runs of `mirror`'s history, oldest first, reading at most
/// the last `budget` bytes of the two files (twice `history_size` holds
/// all of it: a file grown bigger by hand is not read whole).
pub fn last(sd: &StateDir, mirror: &str, n: usize, budget: u64) -> Result<Read> {
    let mut r = read::<Entry>(sd, mirror, budget)?;
    let mut keep: VecDeque<Entry> = r.runs.drain(..).collect();
    while keep.len() > n {
        keep.pop_front();
    }
    r.runs = keep.into();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use crate::run::{Outcome, RunResult, Stage, Trigger};

    fn rec(run: u64, result: RunResult) -> RunRecord {
        RunRecord {
            run,
            trigger: Trigger::Timer,
            request: format!("r{run}"),
            requester: "user=syncgate uid=998".into(),
            started: 1_795_255_500 + run * 100,
            ended: 1_795_255_542 + run * 100,
            outcome: Outcome {
                exit_code: if result == RunResult::Success {
                    Exit::Ok
                } else {
                    Exit::SyncFailed
                },
                ..Outcome::failed(result, format!("run {run}"), Some(0))
            },
            served: 1,
            stage: Stage::All,
        }
    }

    fn dir() -> (tempfile::TempDir, StateDir) {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        (d, sd)
    }

    fn ids(r: &Read) -> Vec<u64> {
        r.runs.iter().map(|e| e.record.run).collect()
    }

    #[test]
    fn runs_are_appended_one_line_each_and_read_back_in_order() {
        let (_d, sd) = dir();
        for i in 1..=3 {
            let res = if i == 2 {
                RunResult::Died
            } else {
                RunResult::Success
            };
            assert_eq!(
                append(&sd, "m", &rec(i, res), 1 << 20).unwrap(),
                Appended::default()
            );
        }
        let text = std::fs::read_to_string(path(&sd, "m")).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.starts_with("{\"mirror\":\"m\",\"run\":1,\"trigger\":\"timer\","),
            "{text}"
        );
        let r = read::<Entry>(&sd, "m", u64::MAX).unwrap();
        assert_eq!(ids(&r), [1, 2, 3]);
        assert_eq!(r.runs[1].record.result, RunResult::Died);
        let t = read::<Timing>(&sd, "m", u64::MAX).unwrap();
        assert_eq!(t.runs[2], Timing::from(&rec(3, RunResult::Success)));
        assert!(r.warnings.is_empty());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path(&sd, "m")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn a_full_file_is_rotated_to_dot_1_and_both_are_bounded() {
        let (_d, sd) = dir();
        let limit = 4096;
        let mut rotations = 0;
        for i in 1..=200 {
            if append(&sd, "m", &rec(i, RunResult::Success), limit)
                .unwrap()
                .rotated
            {
                rotations += 1;
            }
            for p in [path(&sd, "m"), rotated_path(&sd, "m")] {
                if let Ok(md) = std::fs::metadata(&p) {
                    assert!(md.len() <= limit, "{} has {} bytes", p.display(), md.len());
                }
            }
        }
        assert!(rotations > 5, "{rotations} rotations");
        let r = read::<Entry>(&sd, "m", u64::MAX).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let got = ids(&r);
        assert_eq!(*got.last().unwrap(), 200);
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
        assert!(got.len() > 10 && got[0] > 1, "{got:?}");
        assert_eq!(ids(&last(&sd, "m", 3, u64::MAX).unwrap()), [198, 199, 200]);
    }

    #[test]
    fn a_line_cut_short_is_skipped_with_a_warning_and_the_next_line_is_whole() {
        let (_d, sd) = dir();
        append(&sd, "m", &rec(1, RunResult::Success), 1 << 20).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(path(&sd, "m"))
            .unwrap();
        f.write_all(b"{\"mirror\":\"m\",\"run\":2,\"trig").unwrap();
        let done = append(&sd, "m", &rec(3, RunResult::Failed), 1 << 20).unwrap();
        assert!(done.repaired);
        f.write_all(b"not json\n\n").unwrap();
        let r = read::<Entry>(&sd, "m", u64::MAX).unwrap();
        assert_eq!(ids(&r), [1, 3]);
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].contains("skipped 2 line(s)"),
            "{:?}",
            r.warnings
        );
        assert!(r.warnings[0].contains("line 2, 4"), "{:?}", r.warnings);
    }

    #[test]
    fn reading_a_tail_drops_the_partial_first_line_and_reaches_into_the_old_file() {
        let (_d, sd) = dir();
        for i in 1..=30 {
            append(&sd, "m", &rec(i, RunResult::Success), 4096).unwrap();
        }
        let all = ids(&read::<Entry>(&sd, "m", u64::MAX).unwrap());
        let line = std::fs::read_to_string(path(&sd, "m"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .len() as u64
            + 1;
        let cur = std::fs::metadata(path(&sd, "m")).unwrap().len();
        // All of the current file and two lines and a half of the old one.
        let r = read::<Entry>(&sd, "m", cur + 2 * line + line / 2).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let got = ids(&r);
        assert_eq!(got, all[all.len() - got.len()..]);
        assert_eq!(got.len() as u64, cur / line + 2);
        // Inside the current file only.
        let got = ids(&read::<Entry>(&sd, "m", line + 3).unwrap());
        assert_eq!(got, [30]);
    }

    #[test]
    fn a_symlink_or_fifo_is_never_followed_or_opened() {
        let (d, sd) = dir();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, path(&sd, "m")).unwrap();
        let e = append(&sd, "m", &rec(1, RunResult::Success), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"");
        assert!(read::<Entry>(&sd, "m", u64::MAX)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        std::fs::remove_file(path(&sd, "m")).unwrap();
        nix::unistd::mkfifo(
            &path(&sd, "m"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = append(&sd, "m", &rec(1, RunResult::Success), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("m.history.jsonl"), "{e}");
        assert!(read::<Entry>(&sd, "m", u64::MAX).is_err());
    }

    #[test]
    fn no_history_reads_as_empty() {
        let (_d, sd) = dir();
        let r = read::<Entry>(&sd, "m", u64::MAX).unwrap();
        assert!(r.runs.is_empty() && r.warnings.is_empty());
    }
}
