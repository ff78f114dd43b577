//! Hashing the listed files in parallel and comparing each with what its
//! checksum files say.
//!
//! Threads: min(available parallelism, files, [`MAX_THREADS`]); they take
//! files from one list, largest first, so a big file starts early and the
//! small ones fill in. Each file is streamed through a [`BUF`] buffer; a
//! file is hashed once per algorithm however many checksum files list it.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256, Sha512};

use super::sums::{hex, Algo};
use super::walk::open_nofollow;

/// The most hashing threads.
pub const MAX_THREADS: usize = 8;
/// The read buffer of each thread.
pub const BUF: usize = 1024 * 1024;

/// What one checksum file says about a file.
#[derive(Debug, Clone)]
pub struct Expect {
    pub algo: Algo,
    pub digest: Vec<u8>,
    /// The file as listed, relative to the snapshot root.
    pub shown: String,
    /// The checksum file, relative to the snapshot root.
    pub sums: String,
}

/// One file to hash (a resolved path inside the snapshot) and every
/// expectation about it.
#[derive(Debug)]
pub struct Job {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub expects: Vec<Expect>,
}

/// What hashing found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub files: u64,
    pub bytes: u64,
    /// Mismatches and unreadable files, in the order of `jobs`.
    pub failures: Vec<String>,
}

/// Hashes every job and compares.
pub fn run(mut jobs: Vec<Job>) -> Outcome {
    jobs.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len())
        .min(MAX_THREADS);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<u64, Vec<String>>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![0u8; BUF];
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        done.push((i, check(job, &mut buf)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let mut out = Outcome::default();
    if results.len() != jobs.len() {
        out.failures
            .push("a hashing thread failed; not every file was checked".to_string());
    }
    for (_, r) in results {
        match r {
            Ok(bytes) => {
                out.files += 1;
                out.bytes += bytes;
            }
            Err(f) => out.failures.extend(f),
        }
    }
    out
}

/// Hashes one file and compares: the bytes read, or what is wrong.
fn check(job: &Job, buf: &mut [u8]) -> Result<u64, Vec<String>> {
    let shown = || job.expects.first().map_or("?", |e| e.shown.as_str());
    let (bytes, digests) = hash(job, buf).map_err(|e| vec![format!("{}: {e}", shown())])?;
    let mut failures = Vec::new();
    for e in &job.expects {
        let actual = digests
            .iter()
            .find(|(a, _)| *a == e.algo)
            .map(|(_, d)| d.as_slice())
            .unwrap_or_default();
        if actual != e.digest.as_slice() {
            failures.push(format!(
                "{}: {} is {}, but {} says {}",
                e.shown,
                e.algo.name(),
                hex(actual),
                e.sums,
                hex(&e.digest)
            ));
        }
    }
    if failures.is_empty() {
        Ok(bytes)
    } else {
        Err(failures)
    }
}

/// Each algorithm's digest of a file.
type Digests = Vec<(Algo, Vec<u8>)>;

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Streams the file through the hashers its expectations need.
fn hash(job: &Job, buf: &mut [u8]) -> Result<(u64, Digests), String> {
    let mut f = open_nofollow(&job.path).map_err(|e| format!("cannot open it: {e}"))?;
    let md = f.metadata().map_err(|e| format!("cannot stat it: {e}"))?;
    if !md.is_file() || md.dev() != job.dev || md.ino() != job.ino {
        return Err("it was replaced while being verified".to_string());
    }
    let mut hashers: Vec<(Algo, Hasher)> = Algo::ALL
        .into_iter()
        .filter(|a| job.expects.iter().any(|e| e.algo == *a))
        .map(|a| {
            let h = match a {
                Algo::Sha256 => Hasher::Sha256(Sha256::new()),
                Algo::Sha512 => Hasher::Sha512(Sha512::new()),
            };
            (a, h)
        })
        .collect();
    let mut total = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        total += n as u64;
        for (_, h) in &mut hashers {
            match h {
                Hasher::Sha256(h) => h.update(&buf[..n]),
                Hasher::Sha512(h) => h.update(&buf[..n]),
            }
        }
    }
    let digests = hashers
        .into_iter()
        .map(|(a, h)| {
            let d = match h {
                Hasher::Sha256(h) => h.finalize().to_vec(),
                Hasher::Sha512(h) => h.finalize().to_vec(),
            };
            (a, d)
        })
        .collect();
    Ok((total, digests))
}
