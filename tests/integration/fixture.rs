//! A mirror set-up for core tests: an upstream directory, a dest, a state
//! dir and a `privilege = "direct"` config, all in one temporary directory,
//! running as the invoking user. No namespace or root needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub fn syncgate() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncgate"))
}

pub fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

pub fn group_name() -> String {
    nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap()
        .name
}

pub struct Fixture {
    pub dir: TempDir,
    pub upstream: PathBuf,
    pub dest: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
}

impl Fixture {
    /// `mirror_extra` is added to the `[mirror.m]` table (e.g. `bwlimit = 500`).
    pub fn new(mirror_extra: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("syncgate-core-")
            .tempdir()
            .unwrap();
        let upstream = dir.path().join("upstream");
        std::fs::create_dir(&upstream).unwrap();
        let f = Fixture {
            upstream,
            dest: dir.path().join("dest"),
            state: dir.path().join("state"),
            config: dir.path().join("syncgate.toml"),
            dir,
        };
        f.set_mirror_extra(mirror_extra);
        f
    }

    pub fn config_text(&self, mirror_extra: &str) -> String {
        format!(
            "state_dir = \"{state}\"\nprivilege = \"direct\"\nheartbeat = 1\n\n[syslog]\nsocket = \"{sock}\"\n\n\
             [mirror.m]\nupstream = \"{up}\"\ndest = \"{dest}\"\nowner = \"{user}\"\nreader_group = \"{group}\"\n{mirror_extra}\n",
            state = self.state.display(),
            sock = self.dir.path().join("no-syslog").display(),
            up = self.upstream.display(),
            dest = self.dest.display(),
            user = user_name(),
            group = group_name(),
        )
    }

    pub fn set_mirror_extra(&self, mirror_extra: &str) {
        std::fs::write(&self.config, self.config_text(mirror_extra)).unwrap();
    }

    /// Makes syncgate run `script` (a /bin/sh script wrapping rsync) as its
    /// rsync, for tests that need to act between rsync runs or look at them.
    pub fn use_rsync_wrapper(&self, script: &str) {
        let wrapper = self.dir.path().join("rsync-wrapper");
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            format!("rsync = \"{}\"\n{cfg}", wrapper.display()),
        )
        .unwrap();
    }

    pub fn put(&self, rel: &str, bytes: &[u8]) {
        let p = self.upstream.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(syncgate());
        c.arg("--config").arg(&self.config).args(args);
        c.stdin(Stdio::null());
        c
    }

    pub fn sync(&self) -> Output {
        self.cmd(&["sync", "m"]).output().unwrap()
    }

    pub fn spawn_sync(&self) -> Child {
        self.cmd(&["sync", "m"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn state(&self) -> serde_json::Value {
        let p = self.state.join("m.state.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// Waits until a run is recorded as running.
    pub fn wait_running(&self, timeout: Duration) -> u64 {
        let until = Instant::now() + timeout;
        loop {
            let s = self.state();
            if let Some(r) = s["running"]["run"].as_u64() {
                return r;
            }
            assert!(Instant::now() < until, "no run started within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn dest_path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

/// Deterministic pseudo-random bytes (xorshift), so large test files do not
/// compress away and need no RNG crate.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn text(out: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Processes whose command line mentions `needle` (e.g. a test's dest path).
pub fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(&needle) {
                found.push((pid, cmd));
            }
        }
    }
    found
}
