//! What both fixtures ([`super::fixture::Fixture`], local, and
//! [`super::mirror_host::MirrorHost`], through ssh and sudo) offer, written
//! once: the config file, upstream files, the state file, and `syncgate`
//! run as a [`Test`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd::Test;
use super::config::{Config, Opts};

pub trait Mirrors {
    /// The typed config (what [`Mirrors::write_config`] writes).
    fn cfg(&self) -> &Config;
    fn cfg_mut(&mut self) -> &mut Config;
    /// Where the config file is.
    fn config_path(&self) -> &Path;
    /// The syncgate program this fixture runs.
    fn bin(&self) -> &Path;
    /// The local directory behind `mirror`'s upstream (also when the config
    /// names an rsync daemon serving it).
    fn upstream_dir(&self, mirror: &str) -> PathBuf;

    /// The `publish` a mirror gets when its opts leave it unset (`None`:
    /// syncgate's own default).
    fn default_publish(&self) -> Option<&'static str> {
        None
    }

    /// Writes the config file (mode 0644).
    fn write_config(&self) {
        let path = self.config_path();
        let mut cfg = self.cfg().clone();
        for m in &mut cfg.mirrors {
            if m.opts.publish.is_none() {
                m.opts.publish = self.default_publish();
            }
        }
        fs::write(path, cfg.render()).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Changes the config and rewrites the file.
    fn reconfigure(&mut self, change: impl FnOnce(&mut Config)) {
        change(self.cfg_mut());
        self.write_config();
    }

    /// Replaces `mirror`'s optional settings and rewrites the config.
    fn set_opts(&mut self, mirror: &str, opts: Opts) {
        self.reconfigure(|c| c.mirror_mut(mirror).opts = opts);
    }

    /// `mirror`'s published tree.
    fn dest(&self, mirror: &str) -> PathBuf {
        self.cfg().mirror(mirror).dest.clone()
    }

    /// Writes `rel` (parents created) into `mirror`'s upstream.
    fn put(&self, mirror: &str, rel: &str, bytes: &[u8]) {
        let p = self.upstream_dir(mirror).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    /// `mirror`'s state file as JSON (`Null` if missing or unparsable).
    fn state(&self, mirror: &str) -> serde_json::Value {
        fs::read(self.cfg().state_dir.join(format!("{mirror}.state.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The last finished run's record in `mirror`'s state file.
    #[track_caller]
    fn last_run(&self, mirror: &str) -> serde_json::Value {
        let st = self.state(mirror);
        st["runs"]
            .as_array()
            .and_then(|r| r.last().cloned())
            .unwrap_or_else(|| panic!("no finished run in state: {st}"))
    }

    /// Waits until `mirror`'s state satisfies `pred`; returns it, or panics
    /// with the last state after `timeout`.
    #[track_caller]
    fn wait_state(
        &self,
        mirror: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.state(mirror);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{mirror}: {what} did not happen within {timeout:?}; state: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a run of `mirror` is recorded as running; returns the
    /// state (`["running"]["run"]` is its number).
    #[track_caller]
    fn wait_running(&self, mirror: &str, timeout: Duration) -> serde_json::Value {
        self.wait_state(mirror, timeout, "a run starting", |s| {
            s["running"]["run"].as_u64().is_some()
        })
    }

    /// `syncgate --config CONFIG` (stdin /dev/null) as a [`Test`] whose
    /// failure report lists every mirror's dest.
    fn syncgate(&self) -> Test<'static> {
        let mut c = Command::new(self.bin());
        c.arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null());
        let mut t = Test::new(c);
        for m in &self.cfg().mirrors {
            t = t.tree(&m.dest);
        }
        t
    }
}
