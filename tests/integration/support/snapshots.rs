//! Snapshot publishing as a test sees it from outside: the `dest` symlink,
//! the snapshot root beside it, and [`ReleaseReader`], a client that reads
//! one whole release per observation through the symlink.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::host::{set_mode, Host};
use super::procs::ChildGuard;

/// syncgate's private directory in the snapshot root.
pub const PRIVATE: &str = ".syncgate-tmp";

/// `PARENT/.NAME.snapshots` for `dest` = `PARENT/NAME`.
pub fn root_of(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap().to_string_lossy();
    dest.parent().unwrap().join(format!(".{name}.snapshots"))
}

/// Where a snapshot is built before it goes live.
pub fn build_dir(dest: &Path) -> PathBuf {
    root_of(dest).join(PRIVATE).join("build")
}

/// The entries of the snapshot root but syncgate's private directory,
/// sorted (ids sort by time).
pub fn ids(dest: &Path) -> Vec<String> {
    let root = root_of(dest);
    let mut v: Vec<String> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", root.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != PRIVATE)
        .collect();
    v.sort();
    v
}

/// The id dest names; panics unless dest is a symlink to
/// `.NAME.snapshots/ID` (relative) and that snapshot is a directory.
#[track_caller]
pub fn live_id(dest: &Path) -> String {
    let md = fs::symlink_metadata(dest).unwrap_or_else(|e| panic!("dest {}: {e}", dest.display()));
    assert!(
        md.file_type().is_symlink(),
        "dest {} is not a symlink: {md:?}",
        dest.display()
    );
    let target = fs::read_link(dest).unwrap();
    let name = dest.file_name().unwrap().to_string_lossy();
    let root = format!(".{name}.snapshots");
    let mut parts = target.iter();
    assert_eq!(
        parts.next().map(|p| p.to_string_lossy().into_owned()),
        Some(root),
        "dest {} -> {}: not into the snapshot root",
        dest.display(),
        target.display()
    );
    let id = parts
        .next()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        parts.next().is_none() && is_id(&id),
        "dest {} -> {}: not a snapshot id",
        dest.display(),
        target.display()
    );
    assert!(
        root_of(dest).join(&id).is_dir(),
        "dest {} -> {}: no such snapshot",
        dest.display(),
        target.display()
    );
    id
}

/// `YYYYMMDDTHHMMSSZ` with an optional `.N`.
pub fn is_id(s: &str) -> bool {
    let base = s.split_once('.').map_or(s, |(b, _)| b);
    let b = base.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// What a [`ReleaseReader`] saw.
#[derive(Debug, Default, Clone)]
pub struct Reads {
    /// Observations: one resolution of dest, then the checksum file and
    /// every file it lists read through that resolved directory.
    pub observations: u64,
    /// Observations where a listed file was missing or had another hash
    /// (what `sha256sum -c` said, and which directory it was).
    pub mismatches: Vec<String>,
    /// The distinct directories dest resolved to, in the order first seen.
    pub releases: Vec<String>,
}

/// The reader loop: per observation, `cd -P` resolves dest once (a
/// symlink to a snapshot, or the directory itself); `sha256sum -c` then
/// reads the checksum file and hashes what it lists relative to that
/// directory, never through dest again. One line per observation.
const READER: &str = r#"dest="$1"; stop="$2"; sums="$3"
while [ ! -e "$stop" ]; do
  out=$( (cd -P -- "$dest" && pwd && sha256sum --strict -c -- "$sums") 2>&1 )
  if [ $? -eq 0 ]; then
    printf 'ok %s\n' "$(printf '%s\n' "$out" | head -n 1)"
  else
    printf 'BAD %s\n' "$(printf '%s' "$out" | tr '\n' ' ')"
  fi
done
"#;

/// A client of the mirror, as `user` in a child process (`runuser`):
/// observes dest over and over until [`ReleaseReader::finish`].
pub struct ReleaseReader {
    child: ChildGuard,
    stop: PathBuf,
    lines: Option<JoinHandle<Vec<String>>>,
}

impl ReleaseReader {
    /// Starts reading `dest`, whose releases carry the checksum file `sums`.
    pub fn start(host: &Host, user: &str, dest: &Path, sums: &str) -> ReleaseReader {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = host.path(format!("reader-{}", N.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        let stop = dir.join("stop");
        let mut cmd = host.command_as(
            user,
            &[
                "sh",
                "-c",
                READER,
                "reader",
                dest.to_str().unwrap(),
                stop.to_str().unwrap(),
                sums,
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = ChildGuard::spawn(&mut cmd, "release reader");
        let out = child.child_mut().stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        ReleaseReader {
            child,
            stop,
            lines: Some(lines),
        }
    }

    /// Stops the reader after its current observation; what it saw.
    pub fn finish(mut self) -> Reads {
        fs::write(&self.stop, b"").unwrap();
        let status = self.child.wait_timeout(Duration::from_secs(30));
        assert!(status.is_some(), "the release reader did not stop");
        let lines = self.lines.take().unwrap().join().unwrap();
        let mut r = Reads::default();
        for l in lines {
            r.observations += 1;
            match l.strip_prefix("ok ") {
                Some(dir) => {
                    if !r.releases.iter().any(|d| d == dir) {
                        r.releases.push(dir.to_string());
                    }
                }
                None => r.mismatches.push(l),
            }
        }
        r
    }
}

impl Reads {
    /// Prints the figures as `observer SCENARIO: …` (like faults.rs).
    pub fn print(&self, scenario: &str) {
        eprintln!(
            "observer {scenario}: observations={} mismatches={} releases seen={}",
            self.observations,
            self.mismatches.len(),
            self.releases.len()
        );
        for m in self.mismatches.iter().take(5) {
            eprintln!("observer {scenario}:   {m}");
        }
    }
}
