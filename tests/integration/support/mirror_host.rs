//! A production-like mirror host inside the namespace, built from the real
//! pieces the way an admin would: a login account `syncgate` (shell /bin/sh,
//! not locked), an image owner `mirror` in `www-data`, a reader `webreader`
//! in `www-data`, a root-owned syncgate binary and config, the sudoers rule
//! from `syncgate sudoers --install`, an authorized_keys line from
//! `syncgate authorized-key`, a real sshd and a syslog receiver.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cmd::Test;
use super::config::{opts, Config, Key, Mirror, Opts};
use super::host::{set_mode, Host, UserInfo, UserOpts};
use super::mirrors::Mirrors;
use super::SyslogReceiver;

pub const LOGIN: &str = "syncgate";
pub const OWNER: &str = "mirror";
pub const READER: &str = "webreader";
pub const READER_GROUP: &str = "www-data";

/// How dest and its parent are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `srv` root's (0755), each dest a directory `mirror:www-data` 2750.
    InPlace,
    /// As an admin sets a host up for snapshots: `srv` is
    /// `mirror:www-data` 2750 and empty (syncgate creates the dest symlink
    /// and `.NAME.snapshots` in it).
    Snapshots,
}

pub struct MirrorHost {
    pub host: Host,
    pub bin: PathBuf,
    /// The config file.
    pub config: PathBuf,
    pub cfg: Config,
    pub upstream: PathBuf,
    pub state_dir: PathBuf,
    pub log: SyslogReceiver,
    pub login: UserInfo,
    pub owner: UserInfo,
    pub reader: UserInfo,
    /// Private key of the `jenkins` client key.
    pub key: PathBuf,
}

impl MirrorHost {
    /// One mirror `iso` from a local upstream, and the `jenkins` key.
    pub fn new() -> MirrorHost {
        MirrorHost::with(&[("iso", opts())], &[Key::jenkins()])
    }

    /// `mirrors`: (name, its optional settings). `keys`: the `[key.*]`
    /// tables. Each mirror's upstream is `upstream/NAME`. Dest's parent
    /// (`srv`) is root's, mode 0755, and each dest a directory of the owner:
    /// the layout of a mirror published in place (with `publish` unset,
    /// syncgate falls back to two-stage there, with a warning).
    pub fn with(mirrors: &[(&str, Opts)], keys: &[Key]) -> MirrorHost {
        MirrorHost::build(mirrors, keys, Layout::InPlace)
    }

    /// One mirror `iso` laid out for snapshots (see [`Layout::Snapshots`]),
    /// and the `jenkins` key.
    pub fn snapshots() -> MirrorHost {
        MirrorHost::build(&[("iso", opts())], &[Key::jenkins()], Layout::Snapshots)
    }

    /// [`MirrorHost::with`] laid out for snapshots (see [`Layout::Snapshots`]).
    pub fn with_snapshots(mirrors: &[(&str, Opts)], keys: &[Key]) -> MirrorHost {
        MirrorHost::build(mirrors, keys, Layout::Snapshots)
    }

    fn build(mirrors: &[(&str, Opts)], keys: &[Key], layout: Layout) -> MirrorHost {
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
        fs::copy(super::syncgate_bin(), &bin).unwrap();
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
        match layout {
            Layout::InPlace => {
                set_mode(&srv, 0o755);
                for (name, _) in mirrors {
                    make_dest(&srv.join(name), &owner);
                }
            }
            Layout::Snapshots => make_dest(&srv, &owner),
        }
        let state_dir = host.path("var-lib-syncgate");
        fs::create_dir_all(&state_dir).unwrap();
        nix::unistd::chown(&state_dir, Some(login.uid.into()), Some(login.gid.into())).unwrap();
        set_mode(&state_dir, 0o750);

        let log = host.syslog();
        let cfg = Config {
            rsync: None,
            state_dir: state_dir.clone(),
            privilege: "sudo",
            login_user: Some(LOGIN.into()),
            binary: Some(bin.clone()),
            audit_required: None,
            heartbeat: 1,
            status_page: None,
            syslog_socket: log.path().to_path_buf(),
            syslog_facility: Some("authpriv".into()),
            metrics_file: None,
            history_size: None,
            mirrors: mirrors
                .iter()
                .map(|(name, o)| mirror(&upstream, &srv, name, o.clone()))
                .collect(),
            keys: keys.to_vec(),
            hub: None,
        };
        let key_name = "jenkins";
        let (key, public) = host.client_key(key_name);
        let mut mh = MirrorHost {
            config: conf_dir.join("syncgate.toml"),
            cfg,
            host,
            bin,
            upstream,
            state_dir,
            log,
            login,
            owner,
            reader,
            key,
        };
        mh.write_config();
        mh.syncgate().args(["sudoers", "--install"]).status(0).run();

        let pubfile = mh.host.path("jenkins.pub");
        fs::write(&pubfile, format!("{public}\n")).unwrap();
        let line = mh
            .syncgate()
            .args([
                "authorized-key",
                "--key",
                key_name,
                "--from",
                "127.0.0.1/32",
            ])
            .arg(&pubfile)
            .status(0)
            .run();
        let line = String::from_utf8(line.stdout).unwrap();
        let (opts, keypart) = line.trim().split_once(" ssh-ed25519 ").unwrap();
        mh.host
            .authorize(LOGIN, &[(&format!("ssh-ed25519 {keypart}"), opts)]);
        mh.host.start_sshd();
        mh
    }

    /// Adds mirror `name` (upstream `upstream/NAME`, dest `srv/NAME` owned
    /// by the owner, mode 2750) and rewrites the config; the sudoers rule is
    /// not touched (run `syncgate sudoers --install` to match it).
    pub fn add_mirror(&mut self, name: &str, opts: Opts) {
        fs::create_dir_all(self.upstream.join(name)).unwrap();
        let srv = self.host.path("srv");
        make_dest(&srv.join(name), &self.owner);
        let m = mirror(&self.upstream, &srv, name, opts);
        self.reconfigure(|c| c.mirrors.push(m));
    }

    /// `ssh syncgate@127.0.0.1 [CMD]` with the jenkins key (stdin:
    /// /dev/null), as a plain command.
    pub fn ssh_command(&self, cmd: Option<&str>) -> Command {
        let mut c = self.host.ssh(LOGIN, &self.key, cmd);
        c.stdin(Stdio::null());
        c
    }

    /// `ssh syncgate@127.0.0.1 [CMD]` with the jenkins key as a [`Test`]: its
    /// failure report lists every dest and sshd's log.
    pub fn ssh(&self, cmd: Option<&str>) -> Test<'_> {
        self.ssh_test(self.ssh_command(cmd))
    }

    /// `ssh syncgate@127.0.0.1` with `key` and the remote command given as
    /// raw bytes (the client sends argv bytes as they are), stdin /dev/null.
    pub fn ssh_raw(&self, key: &Path, cmd: Option<&std::ffi::OsStr>) -> Test<'_> {
        let mut c = self.host.ssh(LOGIN, key, None);
        if let Some(cmd) = cmd {
            c.arg(cmd);
        }
        c.stdin(Stdio::null());
        self.ssh_test(c)
    }

    fn ssh_test(&self, c: Command) -> Test<'_> {
        let mut t = Test::new(c);
        for m in &self.cfg.mirrors {
            t = t.tree(&m.dest);
        }
        t.context(|| format!("--- sshd log ---\n{}", self.host.sshd_log()))
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.host.path(rel)
    }

    /// Dest's parent, where every mirror's dest (and its snapshots) is.
    pub fn srv(&self) -> PathBuf {
        self.host.path("srv")
    }
}

impl Mirrors for MirrorHost {
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
    fn upstream_dir(&self, mirror: &str) -> PathBuf {
        self.upstream.join(mirror)
    }
}

/// `[mirror.NAME]` of this host: upstream `UPSTREAM/NAME`, dest `SRV/NAME`.
fn mirror(upstream: &Path, srv: &Path, name: &str, opts: Opts) -> Mirror {
    Mirror {
        name: name.into(),
        upstream: upstream.join(name).display().to_string(),
        dest: srv.join(name),
        owner: OWNER.into(),
        reader_group: READER_GROUP.into(),
        opts,
    }
}

/// A dest directory: owner:www-data, mode 2750.
pub fn make_dest(d: &Path, owner: &UserInfo) {
    fs::create_dir_all(d).unwrap();
    nix::unistd::chown(
        d,
        Some(owner.uid.into()),
        Some(nix::unistd::Gid::from_raw(gid_of(READER_GROUP))),
    )
    .unwrap();
    set_mode(d, 0o2750);
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
        let out = self.syncgate().args(&args).status(0).run();
        let file = self.login.home.join(".ssh/authorized_keys");
        let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&out.stdout).unwrap();
        key
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
}
