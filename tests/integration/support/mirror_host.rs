//! A production-like mirror host inside the namespace, built from the real
//! pieces the way an admin would: a login account `syncgate` (shell /bin/sh,
//! not locked), an image owner `mirror` in `www-data`, a reader `webreader`
//! in `www-data`, a root-owned syncgate binary and config, the sudoers rule
//! from `syncgate sudoers --install`, an authorized_keys line from
//! `syncgate authorized-key`, a real sshd and a syslog receiver.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::host::{set_mode, Host, UserInfo, UserOpts};
use super::SyslogReceiver;

pub const LOGIN: &str = "syncgate";
pub const OWNER: &str = "mirror";
pub const READER: &str = "webreader";
pub const READER_GROUP: &str = "www-data";

pub struct MirrorHost {
    pub host: Host,
    pub bin: PathBuf,
    pub config: PathBuf,
    pub upstream: PathBuf,
    pub state_dir: PathBuf,
    pub log: SyslogReceiver,
    pub login: UserInfo,
    pub owner: UserInfo,
    pub reader: UserInfo,
    /// Private key of the `jenkins` client key.
    pub key: PathBuf,
    mirrors: Vec<(String, String)>,
    keys_toml: String,
}

/// Default key table: `jenkins` may sync and see mirror `iso`.
pub const JENKINS: &str = "[key.jenkins]\nverbs = [\"sync\", \"status\", \"help\"]\nmirrors = [\"iso\"]\nfrom = [\"127.0.0.0/8\"]\n";

impl MirrorHost {
    /// One mirror `iso` from a local upstream, and the `jenkins` key.
    pub fn new() -> MirrorHost {
        MirrorHost::with(&[("iso", "")], JENKINS)
    }

    /// `mirrors`: (name, extra lines for its table). `keys_toml`: the
    /// `[key.*]` tables. Each mirror's upstream is `upstream/NAME`.
    pub fn with(mirrors: &[(&str, &str)], keys_toml: &str) -> MirrorHost {
        let mut host = Host::new();
        let login = host.add_user(LOGIN, &UserOpts::default());
        let owner = host.add_user(
            OWNER,
            &UserOpts {
                shell: "/usr/sbin/nologin".into(),
                groups: vec![READER_GROUP.into()],
                create_home: false,
                system: true,
                ..UserOpts::default()
            },
        );
        let reader = host.add_user(
            READER,
            &UserOpts {
                groups: vec![READER_GROUP.into()],
                ..UserOpts::default()
            },
        );

        // Root-owned program and config, as a package would install them.
        let bin_dir = host.path("usr-bin");
        fs::create_dir_all(&bin_dir).unwrap();
        let bin = bin_dir.join("syncgate");
        fs::copy(env!("CARGO_BIN_EXE_syncgate"), &bin).unwrap();
        set_mode(&bin, 0o755);
        let conf_dir = host.path("etc-syncgate");
        fs::create_dir_all(&conf_dir).unwrap();
        set_mode(&conf_dir, 0o755);

        let upstream = host.path("upstream");
        for (name, _) in mirrors {
            fs::create_dir_all(upstream.join(name)).unwrap();
        }
        let srv = host.path("srv");
        fs::create_dir_all(&srv).unwrap();
        set_mode(&srv, 0o755);
        for (name, _) in mirrors {
            let d = srv.join(name);
            fs::create_dir_all(&d).unwrap();
            nix::unistd::chown(
                &d,
                Some(owner.uid.into()),
                Some(nix::unistd::Gid::from_raw(gid_of(READER_GROUP))),
            )
            .unwrap();
            set_mode(&d, 0o2750);
        }
        let state_dir = host.path("var-lib-syncgate");
        fs::create_dir_all(&state_dir).unwrap();
        nix::unistd::chown(&state_dir, Some(login.uid.into()), Some(login.gid.into())).unwrap();
        set_mode(&state_dir, 0o750);

        let log = host.syslog();
        let key_name = "jenkins";
        let (key, public) = host.client_key(key_name);
        let mut mh = MirrorHost {
            config: conf_dir.join("syncgate.toml"),
            host,
            bin,
            upstream,
            state_dir,
            log,
            login,
            owner,
            reader,
            key,
            mirrors: mirrors
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            keys_toml: keys_toml.to_string(),
        };
        mh.write_config();
        let out = mh.syncgate(&["sudoers", "--install"]);
        assert!(
            out.status.success(),
            "sudoers --install: {}",
            super::show(&out)
        );

        let pubfile = mh.host.path("jenkins.pub");
        fs::write(&pubfile, format!("{public}\n")).unwrap();
        let line = mh.syncgate(&[
            "authorized-key",
            "--key",
            key_name,
            "--from",
            "127.0.0.1/32",
            pubfile.to_str().unwrap(),
        ]);
        assert!(line.status.success(), "{}", super::show(&line));
        let line = String::from_utf8(line.stdout).unwrap();
        let (opts, keypart) = line.trim().split_once(" ssh-ed25519 ").unwrap();
        mh.host
            .authorize(LOGIN, &[(&format!("ssh-ed25519 {keypart}"), opts)]);
        mh.host.start_sshd();
        mh
    }

    pub fn dest(&self, mirror: &str) -> PathBuf {
        self.host.path("srv").join(mirror)
    }

    pub fn config_text(&self) -> String {
        let mut t = format!(
            "state_dir = \"{}\"\nprivilege = \"sudo\"\nlogin_user = \"{LOGIN}\"\nbinary = \"{}\"\nheartbeat = 1\n\n[syslog]\nsocket = \"{}\"\nfacility = \"authpriv\"\n\n",
            self.state_dir.display(),
            self.bin.display(),
            self.log.path().display()
        );
        for (name, extra) in &self.mirrors {
            t.push_str(&format!(
                "[mirror.{name}]\nupstream = \"{}\"\ndest = \"{}\"\nowner = \"{OWNER}\"\nreader_group = \"{READER_GROUP}\"\n{extra}\n\n",
                self.upstream.join(name).display(),
                self.dest(name).display()
            ));
        }
        t.push_str(&self.keys_toml);
        t
    }

    /// Writes the config (root:root 0644).
    pub fn write_config(&self) {
        fs::write(&self.config, self.config_text()).unwrap();
        fs::set_permissions(&self.config, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Replaces one mirror's extra lines and rewrites the config (the
    /// sudoers rule is not touched).
    pub fn set_mirror_extra(&mut self, mirror: &str, extra: &str) {
        for m in &mut self.mirrors {
            if m.0 == mirror {
                m.1 = extra.to_string();
            }
        }
        self.write_config();
    }

    /// Adds mirror `name` (upstream `upstream/NAME`, dest `srv/NAME` owned
    /// by the owner, mode 2750) and rewrites the config; the sudoers rule is
    /// not touched (run `syncgate sudoers --install` to match it).
    pub fn add_mirror(&mut self, name: &str, extra: &str) {
        fs::create_dir_all(self.upstream.join(name)).unwrap();
        let d = self.dest(name);
        fs::create_dir_all(&d).unwrap();
        nix::unistd::chown(
            &d,
            Some(self.owner.uid.into()),
            Some(nix::unistd::Gid::from_raw(gid_of(READER_GROUP))),
        )
        .unwrap();
        set_mode(&d, 0o2750);
        self.mirrors.push((name.to_string(), extra.to_string()));
        self.write_config();
    }

    /// Runs syncgate as root with this host's config.
    pub fn syncgate(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ssh syncgate@127.0.0.1 CMD` with the jenkins key (stdin: /dev/null).
    pub fn ssh(&self, cmd: Option<&str>) -> Command {
        let mut c = self.host.ssh(LOGIN, &self.key, cmd);
        c.stdin(Stdio::null());
        c
    }

    pub fn put(&self, mirror: &str, rel: &str, bytes: &[u8]) {
        let p = self.upstream.join(mirror).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    pub fn state(&self, mirror: &str) -> serde_json::Value {
        fs::read(self.state_dir.join(format!("{mirror}.state.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.host.path(rel)
    }
}

pub fn gid_of(group: &str) -> u32 {
    nix::unistd::Group::from_name(group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw()
}

// ---- Helpers for the gate's end-to-end tests (additive). ----

impl MirrorHost {
    /// Creates a client key `NAME`, turns it into an authorized_keys line with
    /// `syncgate authorized-key --key NAME [--from CIDR]...` and appends that
    /// line to the login account's authorized_keys (mode and owner kept).
    /// Returns the private key's path.
    pub fn add_key(&self, name: &str, from: &[&str]) -> PathBuf {
        use std::io::Write;
        let (key, public) = self.host.client_key(name);
        let pubfile = self.host.path(format!("{name}.pub"));
        fs::write(&pubfile, format!("{public}\n")).unwrap();
        let mut args = vec!["authorized-key", "--key", name];
        for cidr in from {
            args.extend(["--from", cidr]);
        }
        args.push(pubfile.to_str().unwrap());
        let out = self.syncgate(&args);
        assert!(
            out.status.success(),
            "authorized-key: {}",
            super::show(&out)
        );
        let file = self.login.home.join(".ssh/authorized_keys");
        let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&out.stdout).unwrap();
        key
    }

    /// `ssh syncgate@127.0.0.1` with `key` and the remote command given as raw
    /// bytes (the client sends argv bytes as they are), stdin /dev/null.
    pub fn ssh_raw(&self, key: &Path, cmd: Option<&std::ffi::OsStr>) -> Command {
        let mut c = self.host.ssh(LOGIN, key, None);
        if let Some(cmd) = cmd {
            c.arg(cmd);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Live gate processes: processes of the login account whose command
    /// line contains `ssh --key` (the forced command).
    pub fn gate_pids(&self) -> Vec<i32> {
        super::procs::pids_of_user(self.login.uid)
            .into_iter()
            .filter(|&p| super::procs::cmdline(p).contains("ssh --key"))
            .collect()
    }

    /// This namespace's syncgate gate processes (the program itself, not
    /// the `/bin/sh -c` that sshd runs it through).
    pub fn gate_programs(&self) -> Vec<i32> {
        let bin = format!("{} ", self.bin.display());
        super::procs::ours(super::procs::pids_of_user(self.login.uid))
            .into_iter()
            .filter(|&p| {
                let c = super::procs::cmdline(p);
                c.starts_with(&bin) && c.contains(" ssh --key ")
            })
            .collect()
    }

    /// Live processes of the login account and of the image owner.
    pub fn user_pids(&self) -> Vec<i32> {
        let mut pids = super::procs::pids_of_user(self.login.uid);
        pids.extend(super::procs::pids_of_user(self.owner.uid));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Waits until the state file of `mirror` satisfies `pred`; returns it,
    /// or panics with the last state after `timeout`.
    pub fn wait_state(
        &self,
        mirror: &str,
        timeout: std::time::Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let s = self.state(mirror);
            if pred(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mirror}: {what} did not happen within {timeout:?}; state: {s:#}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits until a run of `mirror` is in progress (state `running` set).
    pub fn wait_running(&self, mirror: &str, timeout: std::time::Duration) -> serde_json::Value {
        self.wait_state(mirror, timeout, "a run starting", |s| {
            !s["running"].is_null()
        })
    }
}
