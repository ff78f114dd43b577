//! The consistency observer: a thread that reads a published tree over and
//! over while syncs, faults or load happen, and checks what a client of the
//! mirror could see:
//!
//! * every file listed in any published `SHA256SUMS` exists and has exactly
//!   that SHA-256;
//! * no temporary or partial file is visible under a published name (rsync
//!   temporaries `.NAME.XXXXXX` outside syncgate's own `.syncgate-tmp`).
//!
//! rsync's `.~tmp~` holding directory (stage 2's `--delay-updates`) is not a
//! published name: nothing lists it and it is renamed out of at the end of
//! stage 2. Sightings of it are counted, not violations; that none is left
//! behind after a run is checked by the tests themselves.
//!
//! Checksum lines with a hash of all zeros are ignored (tests use them for
//! files whose content they do not care about).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

#[derive(Debug, Default, Clone)]
pub struct Observations {
    /// Complete passes over the tree.
    pub passes: u64,
    /// Checksum-file entries verified.
    pub checks: u64,
    pub violations: Vec<String>,
    /// Times a `.~tmp~` holding directory was seen during a pass.
    pub holding_sightings: u64,
}

pub struct Observer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Observations>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `SHA256SUMS` body for `files` (name, content), as `sha256sum` writes it.
pub fn sums(files: &[(&str, &[u8])]) -> String {
    files
        .iter()
        .map(|(n, b)| format!("{}  {n}\n", sha256_hex(b)))
        .collect()
}

fn is_rsync_temp(name: &str) -> bool {
    // rsync's temporaries: ".<name>.<6 random characters>"
    name.starts_with('.')
        && name.len() > 8
        && name.as_bytes()[name.len() - 7] == b'.'
        && name[name.len() - 6..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

fn pass(root: &Path, dir: &Path, obs: &mut Observations) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if dir == root && name == ".syncgate-tmp" {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if name == ".~tmp~" {
            obs.holding_sightings += 1;
            continue;
        }
        if ft.is_dir() {
            pass(root, &path, obs);
        } else if is_rsync_temp(&name) {
            obs.violations
                .push(format!("{}: an rsync temporary is visible", path.display()));
        } else if name == "SHA256SUMS" && ft.is_file() {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                let Some((hash, file)) = line.split_once("  ") else {
                    continue;
                };
                if hash.bytes().all(|b| b == b'0') {
                    continue;
                }
                obs.checks += 1;
                let target = dir.join(file);
                match std::fs::read(&target) {
                    Ok(b) if sha256_hex(&b) == hash => {}
                    Ok(b) => obs.violations.push(format!(
                        "{} names {file} with {hash}, but it has {} ({} bytes)",
                        path.display(),
                        sha256_hex(&b),
                        b.len()
                    )),
                    Err(e) => obs.violations.push(format!(
                        "{} names {file}, which is not readable: {e}",
                        path.display()
                    )),
                }
            }
        }
    }
}

impl Observer {
    /// Starts observing `root` until [`Observer::finish`].
    pub fn start(root: impl Into<PathBuf>) -> Observer {
        let root = root.into();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut obs = Observations::default();
            loop {
                let last = flag.load(Ordering::SeqCst);
                pass(&root, &root, &mut obs);
                obs.passes += 1;
                if last {
                    break obs;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Observer {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops (after one more full pass) and returns what was seen.
    pub fn finish(mut self) -> Observations {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("observer thread")
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observer_catches_a_checksum_naming_a_missing_file_and_a_visible_temporary() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.iso"), b"a").unwrap();
        std::fs::write(
            d.path().join("SHA256SUMS"),
            sums(&[("a.iso", b"a"), ("b.iso", b"b")]),
        )
        .unwrap();
        std::fs::write(d.path().join(".c.iso.Ab12Cd"), b"partial").unwrap();
        let obs = Observer::start(d.path()).finish();
        assert!(obs.passes >= 1);
        assert_eq!(obs.checks, 2 * obs.passes);
        assert_eq!(
            obs.violations.len() as u64,
            2 * obs.passes,
            "{:?}",
            obs.violations
        );
        assert!(obs.violations[0].contains("b.iso") || obs.violations[1].contains("b.iso"));
    }
}
