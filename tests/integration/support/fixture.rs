//! A mirror set-up for core tests: an upstream directory, a dest, a state
//! dir and a `privilege = "direct"` config for one mirror `m`, all in one
//! temporary directory, running as the invoking user. No namespace or root
//! needed. What it shares with [`super::mirror_host::MirrorHost`] is in
//! [`Mirrors`].

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::cmd::{Running, Test};
use super::config::{Config, Mirror, Opts};
use super::mirrors::Mirrors;

/// The fixture's one mirror.
pub const M: &str = "m";

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
    /// The state directory.
    pub state: PathBuf,
    /// The config file.
    pub config: PathBuf,
    pub cfg: Config,
    bin: PathBuf,
}

impl Fixture {
    /// Mirror `m` with `opts`, in a new temporary directory.
    pub fn new(opts: Opts) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("syncgate-core-")
            .tempdir()
            .unwrap();
        let f = Fixture::in_dir(dir, opts);
        std::fs::create_dir(&f.upstream).unwrap();
        f.write_config();
        f
    }

    /// The fixture's paths in `dir`; nothing is created or written.
    pub fn in_dir(dir: TempDir, opts: Opts) -> Fixture {
        let upstream = dir.path().join("upstream");
        let dest = dir.path().join("dest");
        let state = dir.path().join("state");
        let cfg = Config {
            rsync: None,
            state_dir: state.clone(),
            privilege: "direct",
            login_user: None,
            binary: None,
            audit_required: None,
            heartbeat: 1,
            status_page: None,
            syslog_socket: dir.path().join("no-syslog"),
            syslog_facility: None,
            metrics_file: None,
            history_size: None,
            mirrors: vec![Mirror {
                name: M.into(),
                upstream: upstream.display().to_string(),
                dest: dest.clone(),
                owner: user_name(),
                reader_group: group_name(),
                opts,
            }],
            keys: Vec::new(),
            hub: None,
        };
        Fixture {
            config: dir.path().join("syncgate.toml"),
            upstream,
            dest,
            state,
            cfg,
            bin: super::syncgate_bin(),
            dir,
        }
    }

    /// Makes syncgate run `script` (a /bin/sh script wrapping rsync) as its
    /// rsync, for tests that need to act between rsync runs or look at them.
    pub fn use_rsync_wrapper(&mut self, script: &str) {
        let wrapper = self.dir.path().join("rsync-wrapper");
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        self.reconfigure(|c| c.rsync = Some(wrapper));
    }

    /// `syncgate sync m`, to be given its expectations.
    pub fn sync(&self) -> Test<'static> {
        self.syncgate().args(["sync", M])
    }

    /// `syncgate sync m` in the background; it must exit 0.
    pub fn spawn_sync(&self) -> Running<'static> {
        self.sync().status(0).spawn()
    }

    pub fn dest_path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

impl Mirrors for Fixture {
    /// The fixture tests the in-place route unless a test names one: its
    /// dest's parent is writable, so syncgate's default would be snapshots
    /// (tests/integration/snapshot.rs covers those, with real accounts).
    fn default_publish(&self) -> Option<&'static str> {
        Some("two-stage")
    }
    fn cfg(&self) -> &Config {
        &self.cfg
    }
    fn cfg_mut(&mut self) -> &mut Config {
        &mut self.cfg
    }
    fn config_path(&self) -> &Path {
        &self.config
    }
    fn bin(&self) -> &Path {
        &self.bin
    }
    fn upstream_dir(&self, _mirror: &str) -> PathBuf {
        self.upstream.clone()
    }
}
