//! A mirror network in one namespace (issue 13): a syncgate **hub** and its
//! **downstream sites**, each a host of its own on loopback.
//!
//! * The hub is a [`MirrorHost`] laid out for snapshots (login `syncgate`,
//!   owner `mirror`, sudoers, sshd, the `jenkins` builder key). Its
//!   published tree is served by a real `rsync --daemon` whose module path
//!   is the hub's dest symlink, chrooted: the daemon `chroot`s into the
//!   module when a client connects, so a pull resolves the symlink once and
//!   sees one whole snapshot (a switch during the pull does not mix
//!   releases; see [`serve`]). An rsync
//!   daemon rather than rsync over ssh: that is how public mirrors pull
//!   (Debian's ftpsync speaks `HOST::MODULE`), and it needs no account or
//!   key on the hub for the downstreams.
//! * A [`Site`] is a syncgate downstream: its own login account `sg-LABEL`,
//!   image owner `own-LABEL` (in `www-data`), config
//!   `site-LABEL/etc/syncgate.toml`, state dir, snapshot dest, syslog socket,
//!   sudoers file `/etc/sudoers.d/syncgate-LABEL` (from `syncgate sudoers`)
//!   and its own sshd port. Its mirror `iso` pulls from its upstream's rsync
//!   daemon. Its `[key.hub]` is the hub's push key, bound in its
//!   authorized_keys by `syncgate authorized-key --key hub`.
//! * An [`FtpsyncSite`] is a real Debian `ftpsync` receiver: account
//!   `ftp-LABEL`, `~/.config/ftpsync/ftpsync-iso.conf` pulling from the
//!   hub's rsync daemon, authorized_keys with `command="/usr/bin/ftpsync"`
//!   (as ftpsync's README says), its own sshd.
//! * A [`Pusher`] is what the hub's login account pushes with: one private
//!   key per downstream (ssh-keygen, owned by the login account, 0600) and a
//!   root-owned `known_hosts` with every downstream's host key.
//! * Bad downstreams: [`dead_port`] (connection refused) and [`Hang`] (a
//!   listener that accepts and never says a word); a throttled one is a
//!   [`Site`] with a tiny `bwlimit` and a big file on the hub.
//!
//! [`Hub::push_direct`] sends a downstream the exact ssh argv of the hub
//! contract, as the hub's login account: the harness is proved without the
//! hub code.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::{Config, DownstreamTable, HubTable, Key, Mirror, Opts};
use super::host::{set_mode, Host, UserInfo, UserOpts, CLEAN_PATH};
use super::mirror_host::{make_dest, MirrorHost, READER_GROUP};
use super::mirrors::Mirrors;
use super::runmirrors::BindMount;
use super::sshd::Sshd;
use super::{free_port, procs, require_tool, run_ok, RsyncDaemon, SyslogReceiver};

/// The mirror every host of the network carries.
pub const ISO: &str = "iso";
/// The `[key.NAME]` a downstream gives its upstream's push key.
pub const HUB_KEY: &str = "hub";

/// The hub: a snapshot [`MirrorHost`], the rsync daemon serving its dest,
/// the pusher and its downstreams.
pub struct Hub {
    pub mh: MirrorHost,
    pub rsyncd: RsyncDaemon,
    pub pusher: Pusher,
    pub sites: Vec<Site>,
    pub ftpsync: Vec<FtpsyncSite>,
    /// Every downstream table (sites, ftpsync receivers, bad ones), in the
    /// order they were added; written into the config by
    /// [`Hub::enable`].
    pub downstreams: Vec<DownstreamTable>,
    hangs: Vec<Hang>,
    _sendmail: Option<BindMount>,
}

impl Hub {
    /// A hub with mirror `iso` (its settings `opts`, without downstreams
    /// yet) and the builder key `jenkins`.
    pub fn new(opts: Opts) -> Hub {
        let mh = MirrorHost::with_snapshots(&[(ISO, opts)], &[Key::jenkins()]);
        let rsyncd = serve(&mh.dest(ISO), &mh.reader.name);
        let pusher = Pusher::new(&mh.path("hub-push"), &mh.login);
        // ftpsync mails its admin on errors: record, never hand to an MTA.
        let fake = mh.path("sendmail");
        let mailbox = mh.path("mail");
        fs::create_dir_all(&mailbox).unwrap();
        set_mode(&mailbox, 0o1777);
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\n{{ echo \"=== sendmail $*\"; cat; }} >> '{}/sent'\n",
                mailbox.display()
            ),
        )
        .unwrap();
        set_mode(&fake, 0o755);
        let sendmail = Path::new("/usr/sbin/sendmail")
            .exists()
            .then(|| BindMount::new(&fake, Path::new("/usr/sbin/sendmail")));
        Hub {
            mh,
            rsyncd,
            pusher,
            sites: Vec::new(),
            ftpsync: Vec::new(),
            downstreams: Vec::new(),
            hangs: Vec::new(),
            _sendmail: sendmail,
        }
    }

    /// Adds a syncgate downstream `label` pulling from the hub, pushed in
    /// `mode` with `timeout` seconds; `opts` are its mirror's settings.
    pub fn add_site(&mut self, label: &str, mode: &'static str, timeout: u64, opts: Opts) {
        let site = Site::new(
            &mut self.mh.host,
            label,
            &url(&self.rsyncd),
            &self.mh.bin,
            opts,
        );
        let table = self.pusher.link(&site, mode, timeout);
        self.downstreams.push(table);
        self.sites.push(site);
    }

    /// Adds a real Debian ftpsync receiver `label` pulling from the hub.
    pub fn add_ftpsync(&mut self, label: &str, mode: &'static str, timeout: u64) {
        let mail = self.mh.path("mail");
        let site = FtpsyncSite::new(&mut self.mh.host, label, &self.rsyncd, mail);
        let table = self.pusher.link_ftpsync(&site, mode, timeout);
        self.downstreams.push(table);
        self.ftpsync.push(site);
    }

    /// Adds a downstream whose port refuses connections.
    pub fn add_dead(&mut self, label: &str, timeout: u64) {
        let port = dead_port();
        let table = self.pusher.unreachable(label, port, timeout);
        self.downstreams.push(table);
    }

    /// Adds a downstream that accepts TCP and never answers.
    pub fn add_hang(&mut self, label: &str, timeout: u64) {
        let hang = Hang::start();
        let table = self.pusher.unreachable(label, hang.port, timeout);
        self.downstreams.push(table);
        self.hangs.push(hang);
    }

    /// Writes `[hub]` and every `[mirror.iso.downstream.*]` into the hub's
    /// config (with `max_parallel`), so the hub code pushes them.
    pub fn enable(&mut self, max_parallel: Option<u64>) {
        let table = HubTable {
            max_parallel,
            ..self.pusher.table()
        };
        let downstreams = self.downstreams.clone();
        self.mh.reconfigure(|c| {
            c.hub = Some(table);
            c.mirror_mut(ISO).opts.downstreams = downstreams;
        });
    }

    /// The downstream table called `label`.
    pub fn table(&self, label: &str) -> &DownstreamTable {
        self.downstreams
            .iter()
            .find(|d| d.label == label)
            .unwrap_or_else(|| panic!("no downstream {label}"))
    }

    pub fn site(&self, label: &str) -> &Site {
        self.sites
            .iter()
            .find(|s| s.label == label)
            .unwrap_or_else(|| panic!("no site {label}"))
    }

    /// Pushes downstream `label` the hub contract's way (one ssh, argv
    /// only, batch mode, strict host keys from the pusher's known_hosts),
    /// as the hub's login account, with `words` as the remote command.
    pub fn push_direct(&self, label: &str, words: &str) -> Output {
        self.pusher
            .ssh(self.table(label), words)
            .output()
            .expect("run ssh")
    }

    /// The hub's push audit lines (`event=push-start|push-end`).
    pub fn push_events(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        push_events(&self.mh.log)
    }

    /// The hub's live ssh processes (its login account's).
    pub fn ssh_pids(&self) -> Vec<i32> {
        ssh_pids_of(self.mh.login.uid)
    }

    /// Everything that tells what happened, for failure messages.
    pub fn story(&self) -> String {
        let mut s = format!(
            "--- hub audit trail ---\n{}\n--- hub state ---\n{:#}\n--- hub push state ---\n{}\n",
            self.mh.log.lines().join("\n"),
            self.mh.state(ISO),
            fs::read_to_string(self.mh.state_dir.join(format!("{ISO}.push.json")))
                .unwrap_or_else(|e| format!("({e})")),
        );
        for site in &self.sites {
            s.push_str(&site.story());
        }
        for f in &self.ftpsync {
            s.push_str(&f.story());
        }
        let _ = write!(s, "--- hub rsyncd log ---\n{}", self.rsyncd.log());
        s
    }
}

/// A read-only rsync daemon serving module `iso` whose path is `dest`
/// (the dest symlink of a snapshot mirror) with `use chroot = yes`, as
/// `user` in the reader group; downstreams pull `rsync://HOST:PORT/iso/`.
///
/// The chroot is what pins a pull to one snapshot: the daemon `chroot`s
/// into the module path when a client connects, which resolves the symlink
/// once, and every file of that pull is read inside the snapshot it pointed
/// to then. Two set-ups that do not work with rsync 3.5: `path = dest`
/// without chroot (the daemon refuses to follow a module-path symlink root
/// does not own: "refusing to follow a symlink owned by an untrusted
/// user"), and `path = dest's parent` pulling `MODULE/iso/` (3.5 resolves
/// every file open from the module root again, through the symlink, so a
/// switch during the pull mixes two releases: seen as `verify-failed` on
/// the downstream).
pub fn serve(dest: &Path, user: &str) -> RsyncDaemon {
    RsyncDaemon::start_with(
        &[(ISO, dest)],
        &format!("use chroot = yes\nuid = {user}\ngid = {READER_GROUP}"),
    )
}

/// `rsync://127.0.0.1:PORT/iso/` of `daemon`.
pub fn url(daemon: &RsyncDaemon) -> String {
    daemon.url(ISO)
}

/// The push audit lines of `log`, oldest first.
pub fn push_events(log: &SyslogReceiver) -> Vec<std::collections::BTreeMap<String, String>> {
    log.lines()
        .iter()
        .map(|l| super::fields(l))
        .filter(|f| {
            matches!(
                f.get("event").map(String::as_str),
                Some("push-start" | "push-end")
            )
        })
        .collect()
}

/// Live `ssh` client processes of `uid` in this namespace.
pub fn ssh_pids_of(uid: u32) -> Vec<i32> {
    procs::ours(procs::pids_of_user(uid))
        .into_iter()
        .filter(|&p| {
            let c = procs::cmdline(p);
            let prog = c.split(' ').next().unwrap_or("");
            prog == "ssh" || prog.ends_with("/ssh")
        })
        .collect()
}

// ------------------------------------------------------------------ pusher

/// A pushing account's keys and known_hosts (for the hub or a mid-tier).
pub struct Pusher {
    pub login: UserInfo,
    pub known_hosts: PathBuf,
    pub key_dir: PathBuf,
}

impl Pusher {
    /// `dir` (root, 0755) holds `known_hosts` (root, 0644) and `keys/`
    /// (root, 0755; each key owned by `login`, 0600).
    pub fn new(dir: &Path, login: &UserInfo) -> Pusher {
        let key_dir = dir.join("keys");
        fs::create_dir_all(&key_dir).unwrap();
        set_mode(dir, 0o755);
        set_mode(&key_dir, 0o755);
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, "").unwrap();
        set_mode(&known_hosts, 0o644);
        Pusher {
            login: login.clone(),
            known_hosts,
            key_dir,
        }
    }

    /// `[hub]` for this pusher.
    pub fn table(&self) -> HubTable {
        HubTable {
            known_hosts: self.known_hosts.clone(),
            max_parallel: None,
            ssh: None,
        }
    }

    /// A fresh ed25519 push key `keys/LABEL` for `label`, readable by the
    /// login account only. Returns (private key, public key line).
    pub fn key(&self, label: &str) -> (PathBuf, String) {
        let key = self.key_dir.join(label);
        run_ok(
            Command::new(require_tool("ssh-keygen"))
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("push-{label}"))
                .arg("-f")
                .arg(&key),
        );
        chown(&key, Some(self.login.uid), Some(self.login.gid)).unwrap();
        set_mode(&key, 0o600);
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        (key, public.trim().to_string())
    }

    /// Appends `[127.0.0.1]:PORT TYPE BLOB` (from `sshd`'s host key) to
    /// known_hosts.
    pub fn trust(&self, sshd_dir: &Path, port: u16) {
        let host_key = fs::read_to_string(sshd_dir.join("host_ed25519.pub")).unwrap();
        let mut parts = host_key.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.known_hosts)
            .unwrap();
        writeln!(f, "[127.0.0.1]:{port} {kind} {blob}").unwrap();
    }

    /// Makes `site` a downstream of this pusher: a key, the site's
    /// authorized_keys line for it (`[key.hub]`), its host key trusted.
    pub fn link(&self, site: &Site, mode: &'static str, timeout: u64) -> DownstreamTable {
        let (key, public) = self.key(&site.label);
        site.authorize(&public);
        self.trust(&site.sshd_dir(), site.sshd.port());
        DownstreamTable {
            label: site.label.clone(),
            host: "127.0.0.1".into(),
            port: Some(site.sshd.port()),
            user: site.login.name.clone(),
            archive: Some(ISO.into()),
            key,
            kind: "syncgate",
            mode,
            timeout: Some(timeout),
        }
    }

    /// Makes an ftpsync receiver a downstream of this pusher.
    pub fn link_ftpsync(
        &self,
        site: &FtpsyncSite,
        mode: &'static str,
        timeout: u64,
    ) -> DownstreamTable {
        let (key, public) = self.key(&site.label);
        site.authorize(&public);
        self.trust(&site.sshd_dir, site.sshd.port());
        DownstreamTable {
            label: site.label.clone(),
            host: "127.0.0.1".into(),
            port: Some(site.sshd.port()),
            user: site.user.name.clone(),
            archive: Some(ISO.into()),
            key,
            kind: "ftpsync",
            mode,
            timeout: Some(timeout),
        }
    }

    /// A downstream at `port` with nobody behind it (a key of its own, no
    /// known host).
    pub fn unreachable(&self, label: &str, port: u16, timeout: u64) -> DownstreamTable {
        let (key, _) = self.key(label);
        DownstreamTable {
            label: label.into(),
            host: "127.0.0.1".into(),
            port: Some(port),
            user: format!("sg-{label}"),
            archive: Some(ISO.into()),
            key,
            kind: "syncgate",
            mode: "all",
            timeout: Some(timeout),
        }
    }

    /// The ssh argv of the hub contract for `d` and `words`, run as the
    /// login account (`runuser`, clean environment).
    pub fn ssh(&self, d: &DownstreamTable, words: &str) -> Command {
        let port = d.port.unwrap_or(22).to_string();
        let kh = format!("UserKnownHostsFile={}", self.known_hosts.display());
        let key = d.key.display().to_string();
        let argv = [
            "ssh",
            "-n",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &kh,
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            &key,
            "-p",
            &port,
            "-l",
            &d.user,
            "--",
            &d.host,
            words,
        ];
        let mut cmd = Command::new(require_tool("runuser"));
        cmd.args(["-u", &self.login.name, "--"])
            .args(argv)
            .env_clear()
            .env("PATH", CLEAN_PATH)
            .env("LC_ALL", "C")
            .env("HOME", &self.login.home)
            .stdin(Stdio::null());
        cmd
    }
}

// ------------------------------------------------------------------- sites

/// A syncgate downstream host (see the module docs).
pub struct Site {
    pub label: String,
    pub login: UserInfo,
    pub owner: UserInfo,
    pub bin: PathBuf,
    /// `site-LABEL` in the workspace.
    pub dir: PathBuf,
    pub config: PathBuf,
    pub cfg: Config,
    pub state_dir: PathBuf,
    pub log: SyslogReceiver,
    pub sshd: Sshd,
    /// Its upstream (an rsync:// URL).
    pub upstream: String,
    /// Serving its dest to its own downstreams (a mid-tier hub).
    pub rsyncd: Option<RsyncDaemon>,
    /// Its own pusher (a mid-tier hub).
    pub pusher: Option<Pusher>,
}

impl Site {
    /// Builds site `label` on `host`: accounts, config with mirror `iso`
    /// from `upstream` (settings `opts`) and `[key.hub]`, sudoers, sshd.
    pub fn new(host: &mut Host, label: &str, upstream: &str, bin: &Path, opts: Opts) -> Site {
        let dir = host.path(format!("site-{label}"));
        fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        let login = host.add_user(&format!("sg-{label}"), &UserOpts::default());
        let owner = host.add_user(
            &format!("own-{label}"),
            &UserOpts {
                shell: "/usr/sbin/nologin".into(),
                groups: vec![READER_GROUP.into()],
                create_home: false,
                system: true,
                ..UserOpts::default()
            },
        );
        let etc = dir.join("etc");
        fs::create_dir_all(&etc).unwrap();
        set_mode(&etc, 0o755);
        let srv = dir.join("srv");
        make_dest(&srv, &owner);
        let state_dir = dir.join("state");
        fs::create_dir_all(&state_dir).unwrap();
        chown(&state_dir, Some(login.uid), Some(login.gid)).unwrap();
        set_mode(&state_dir, 0o750);
        let log = SyslogReceiver::bind(dir.join("log.sock"));
        let cfg = Config {
            rsync: None,
            state_dir: state_dir.clone(),
            privilege: "sudo",
            login_user: Some(login.name.clone()),
            binary: Some(bin.to_path_buf()),
            audit_required: None,
            heartbeat: 1,
            syslog_socket: log.path().to_path_buf(),
            syslog_facility: Some("authpriv".into()),
            status_page: None,
            metrics_file: None,
            history_size: None,
            mirrors: vec![Mirror {
                name: ISO.into(),
                upstream: upstream.into(),
                dest: srv.join(ISO),
                owner: owner.name.clone(),
                reader_group: READER_GROUP.into(),
                opts,
            }],
            keys: vec![Key {
                name: HUB_KEY,
                verbs: vec!["sync", "status"],
                mirrors: vec![ISO],
                from: vec!["127.0.0.0/8"],
                max_waiting: None,
                runmirrors: true,
            }],
            hub: None,
        };
        let sshd = Sshd::start(&dir.join("sshd"), "");
        let site = Site {
            label: label.into(),
            config: etc.join("syncgate.toml"),
            login,
            owner,
            bin: bin.to_path_buf(),
            dir,
            cfg,
            state_dir,
            log,
            sshd,
            upstream: upstream.into(),
            rsyncd: None,
            pusher: None,
        };
        site.write_config();
        let rule = site.syncgate().arg("sudoers").status(0).run();
        host.install_sudoers(
            &format!("syncgate-{label}"),
            &String::from_utf8(rule.stdout).unwrap(),
        );
        // An empty, root-owned authorized_keys (lines come from `authorize`).
        host.authorize(&site.login.name, &[]);
        site
    }

    pub fn sshd_dir(&self) -> PathBuf {
        self.dir.join("sshd")
    }

    /// Appends the line `syncgate authorized-key --key hub --from
    /// 127.0.0.1/32` prints for `public` to the login's authorized_keys.
    pub fn authorize(&self, public: &str) {
        let pubfile = self.dir.join(format!("push-{}.pub", self.label));
        fs::write(&pubfile, format!("{public}\n")).unwrap();
        let out = self
            .syncgate()
            .args(["authorized-key", "--key", HUB_KEY, "--from", "127.0.0.1/32"])
            .arg(&pubfile)
            .status(0)
            .run();
        let file = self.login.home.join(".ssh/authorized_keys");
        let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&out.stdout).unwrap();
    }

    /// Makes this site a mid-tier hub: an rsync daemon serving its dest and
    /// a pusher of its own (its login account's keys and known_hosts).
    pub fn serve(&mut self) {
        self.rsyncd = Some(serve(&self.dest(ISO), &self.owner.name));
        self.pusher = Some(Pusher::new(&self.dir.join("push"), &self.login));
    }

    /// `rsync://127.0.0.1:PORT/iso/` of [`Site::serve`]'s daemon.
    pub fn url(&self) -> String {
        url(self.rsyncd.as_ref().expect("call serve() first"))
    }

    /// Writes `[hub]` (this site's pusher) and `downstreams` into its
    /// config.
    pub fn enable(&mut self, downstreams: Vec<DownstreamTable>) {
        let table = self.pusher.as_ref().expect("call serve() first").table();
        self.reconfigure(|c| {
            c.hub = Some(table);
            c.mirror_mut(ISO).opts.downstreams = downstreams;
        });
    }

    /// The live release (what a reader of dest sees).
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.dest(ISO).join(rel)).ok()
    }

    /// The site's requests (`event=outcome`) so far.
    pub fn outcomes(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        self.log.events("outcome")
    }

    pub fn story(&self) -> String {
        format!(
            "--- site {} audit trail ---\n{}\n--- site {} state ---\n{:#}\n--- site {} sshd ---\n{}\n",
            self.label,
            self.log.lines().join("\n"),
            self.label,
            self.state(ISO),
            self.label,
            self.sshd.log()
        )
    }
}

impl Mirrors for Site {
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
    /// A site's upstream is remote (an rsync daemon); there is no local
    /// directory behind it to write into.
    fn upstream_dir(&self, _mirror: &str) -> PathBuf {
        panic!(
            "site {}: its upstream is {}, write into the hub's upstream instead",
            self.label, self.upstream
        )
    }
}

/// A real Debian `ftpsync` receiver (see the module docs).
pub struct FtpsyncSite {
    pub label: String,
    pub user: UserInfo,
    /// ftpsync's `TO`.
    pub dest: PathBuf,
    pub sshd: Sshd,
    pub sshd_dir: PathBuf,
    /// ftpsync's `MIRRORNAME` (its trace file is `TO/project/trace/NAME`).
    pub mirrorname: String,
    /// `~/.local/log/ftpsync`.
    pub log_dir: PathBuf,
    /// Where the fake sendmail appends mails.
    pub mailbox: PathBuf,
}

impl FtpsyncSite {
    pub fn new(host: &mut Host, label: &str, upstream: &RsyncDaemon, mail: PathBuf) -> FtpsyncSite {
        require_tool("ftpsync");
        let dir = host.path(format!("site-{label}"));
        fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        let user = host.add_user(&format!("ftp-{label}"), &UserOpts::default());
        let home = user.home.clone();
        let conf_dir = home.join(".config/ftpsync");
        let log_dir = home.join(".local/log/ftpsync");
        for d in [&conf_dir, &log_dir] {
            fs::create_dir_all(d).unwrap();
        }
        let dest = dir.join("debian");
        fs::create_dir_all(&dest).unwrap();
        chown(&dest, Some(user.uid), Some(user.gid)).unwrap();
        set_mode(&dest, 0o755);
        let mirrorname = format!("{label}.mirror.test");
        // `sync:archive:iso` makes ftpsync read ftpsync-iso.conf.
        let conf = format!(
            "# ftpsync config written by syncgate's e2e harness\n\
             MIRRORNAME=\"{mirrorname}\"\n\
             TRACEHOST=\"{mirrorname}\"\n\
             TO=\"{to}/\"\n\
             RSYNC_SOURCE=\"{src}\"\n\
             RSYNC_HOST=127.0.0.1\n\
             MAILTO=\"{user}@localhost\"\n\
             INFO_MAINTAINER=\"e2e <root@localhost>\"\n\
             UIPSLEEP=1\n",
            to = dest.display(),
            src = url(upstream),
            user = user.name,
        );
        fs::write(conf_dir.join("ftpsync-iso.conf"), conf).unwrap();
        let sshd_dir = dir.join("sshd");
        let sshd = Sshd::start(&sshd_dir, "");
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{0}:{0}", user.name))
                .arg(&home),
        );
        FtpsyncSite {
            label: label.into(),
            user,
            dest,
            sshd,
            sshd_dir,
            mirrorname,
            log_dir,
            mailbox: mail.join("sent"),
        }
    }

    /// `~/.ssh/authorized_keys` as ftpsync's README sets it up: the
    /// upstream's key, forced command `ftpsync`, no forwarding or pty, only
    /// from the upstream's address.
    pub fn authorize(&self, public: &str) {
        let ssh = self.user.home.join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        let file = ssh.join("authorized_keys");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        writeln!(
            f,
            "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,\
             command=\"{}\",from=\"127.0.0.1\" {public}",
            require_tool("ftpsync").display()
        )
        .unwrap();
        for (p, mode) in [(&ssh, 0o700), (&file, 0o600)] {
            chown(p, Some(self.user.uid), Some(self.user.gid)).unwrap();
            set_mode(p, mode);
        }
    }

    /// Its trace file (written, atomically, when a sync completes).
    pub fn trace(&self) -> PathBuf {
        self.dest.join("project/trace").join(&self.mirrorname)
    }

    fn lock(&self) -> PathBuf {
        self.dest
            .join(format!("Archive-Update-in-Progress-{}", self.mirrorname))
    }

    /// Whether a sync is over: the trace file exists, its lock is gone and
    /// none of its processes (ftpsync, rsync) is left.
    pub fn done(&self) -> bool {
        self.trace().is_file()
            && !self.lock().exists()
            && procs::ours(procs::pids_of_user(self.user.uid)).is_empty()
    }

    /// Waits (at most `limit`) for [`FtpsyncSite::done`] with a trace file
    /// newer than `since`; returns how long it took.
    #[track_caller]
    pub fn wait_done(&self, since: std::time::SystemTime, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let fresh = || {
            fs::metadata(self.trace())
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since)
        };
        while !(self.done() && fresh()) {
            assert!(
                t0.elapsed() < limit,
                "ftpsync {} did not finish within {limit:?}\n{}",
                self.label,
                self.story()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t0.elapsed()
    }

    /// Every ftpsync log (current and rotated) and the mails.
    pub fn story(&self) -> String {
        let mut s = String::new();
        let mut logs: Vec<_> = fs::read_dir(&self.log_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        logs.sort();
        for p in logs {
            let _ = write!(
                s,
                "--- ftpsync {} {} ---\n{}\n",
                self.label,
                p.display(),
                fs::read_to_string(&p).unwrap_or_else(|_| "(binary)".into())
            );
        }
        let _ = write!(
            s,
            "--- mails ---\n{}\n--- ftpsync {} sshd ---\n{}\n",
            fs::read_to_string(&self.mailbox).unwrap_or_default(),
            self.label,
            self.sshd.log()
        );
        s
    }
}

// ------------------------------------------------------- bad downstreams

/// A loopback port nobody listens on (connection refused). Racy like
/// [`free_port`], harmless here: nothing else in the namespace binds.
pub fn dead_port() -> u16 {
    free_port()
}

/// A listener that accepts every connection and never sends a byte (an
/// ssh server that hangs before its banner). Stopped on drop.
pub struct Hang {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hang {
    pub fn start() -> Hang {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind hang listener");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Hang {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ----------------------------------------------------------------- trees

/// Relative path → content of every regular file under `root` (symlinks
/// followed at the root only), skipping paths for which `skip` is true.
pub fn tree(
    root: &Path,
    skip: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(root) = fs::canonicalize(root) else {
        return out;
    };
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            if skip(&rel) {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.insert(rel, fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// Names of the files whose content differs between two trees (or that
/// only one has), for assertion messages.
pub fn tree_diff(
    want: &std::collections::BTreeMap<String, Vec<u8>>,
    got: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut d: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, _)| format!("missing or different: {k}"))
        .collect();
    d.extend(
        got.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("extra: {k}")),
    );
    d
}
