//! Debian's real `runmirrors` (package `ftpsync`) as the upstream that
//! pushes a [`MirrorHost`], set up the way a Debian mirror admin does it.
//!
//! * The pushing account is `archvsync` (Debian's name for it), with a home
//!   on the namespace's tmpfs `/home`: runmirrors reads
//!   `~/.config/ftpsync/runmirrors[-ARCHIVE].{conf,mirror}`, logs to
//!   `~/.local/log/ftpsync/` and keeps its stage-1 "lock" files in
//!   `~/.local/lock/ftpsync/`.
//! * The push key is the host's `jenkins` client key (or another one),
//!   copied to runmirrors' default `KEYFILE`, `~/.ssh/pushmirror`.
//! * Host keys are checked: `~/.ssh/known_hosts` holds the test sshd's host
//!   key and the config's `SSH_OPTS` says `StrictHostKeyChecking=yes`
//!   (runmirrors' own default is `=no`).
//! * Each downstream is a `runmirrors.mirror` line
//!   `TYPE NAME 127.0.0.1 syncgate -p PORT` (the "-$SOMESSHOPTION" form of
//!   the shipped sample: everything after the user is handed to ssh; it may
//!   hold one space only, see [`Downstream`]).
//! * `/usr/sbin/sendmail` is replaced (a bind mount, namespace only) by a
//!   script that appends each mail to a file: runmirrors mails `MAILTO` when
//!   a trigger fails, and no test may hand mail to the machine's real MTA.
//!
//! [`Runmirrors::push`] runs `runmirrors [-a ARCHIVE]` and returns a
//! [`Push`]: its exit status, when it exited, when its backgrounded triggers
//! finished, its log, each downstream's log, and the mails it sent.
//!
//! What runmirrors 20180513 does, read from `/usr/bin/runmirrors`:
//! * every mirror line is pushed by a backgrounded `signal` function; the
//!   script itself exits 0 right after starting them (it does not wait,
//!   unless run with `-f` from ftpsync), so a push is only over once every
//!   background trigger has closed the stdout/stderr it inherited. That is
//!   what [`Push::done_after`] measures;
//! * a trigger is `ssh -n HOST -o user=U -o BatchMode=yes
//!   -o ServerAliveInterval=45 -o ConnectTimeout=45
//!   -o PasswordAuthentication=no $SSH_OPTS -i KEY [per-line options]
//!   " sync:archive:ARCHIVE [sync:mhop] sync:WORD"`; its output goes to
//!   `LOGDIR/NAME.log` and its exit status is ignored unless it is 255
//!   ("trigger failed", plus a mail); anything else is logged as
//!   "trigger succeeded";
//! * `staged`/`mhop` lines send `sync:stage1` (synchronously, inside the
//!   background trigger), touch `LOCKDIR/NAME.stage1`, wait until every
//!   staged/mhop line's lock exists (polling every 5 s, at most `PUSHDELAY`
//!   seconds, default 600), then send `sync:stage2`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::chown;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::host::{set_mode, UserInfo, UserOpts};
use super::mirror_host::{MirrorHost, LOGIN};
use super::{describe, procs, require_tool, run_ok};

/// The upstream's account (Debian's mirror user name).
pub const PUSHER: &str = "archvsync";

/// How a downstream is pushed: the first field of its `runmirrors.mirror`
/// line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `all`: one trigger, ` sync:archive:A sync:all`.
    All,
    /// `staged`: ` sync:archive:A sync:stage1`, wait, ` … sync:stage2`.
    Staged,
    /// `mhop`: as staged, with `sync:mhop` before the stage word.
    Mhop,
}

impl Mode {
    pub fn word(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::Staged => "staged",
            Mode::Mhop => "mhop",
        }
    }

    /// The commands runmirrors sends for this mode and `archive`, in order,
    /// exactly as they arrive in `SSH_ORIGINAL_COMMAND` (leading space
    /// included).
    pub fn commands(self, archive: &str) -> Vec<String> {
        let head = format!(" sync:archive:{archive}");
        match self {
            Mode::All => vec![format!("{head} sync:all")],
            Mode::Staged => vec![format!("{head} sync:stage1"), format!("{head} sync:stage2")],
            Mode::Mhop => vec![
                format!("{head} sync:mhop sync:stage1"),
                format!("{head} sync:mhop sync:stage2"),
            ],
        }
    }
}

/// One line of `runmirrors.mirror`: `MODE NAME HOST USER SSH_OPTIONS`.
#[derive(Clone, Debug)]
pub struct Downstream {
    pub mode: Mode,
    /// runmirrors' short name for it (its log is `LOGDIR/NAME.log`).
    pub name: String,
    pub host: String,
    pub user: String,
    /// Passed to ssh as they are. runmirrors carries them through a
    /// `local` declaration that turns only the first space into something
    /// else, so at most one space (`-p 2222`, `-oPort=2222`).
    pub ssh_options: String,
}

impl Downstream {
    /// `MODE NAME 127.0.0.1 syncgate -p PORT`.
    pub fn local(mode: Mode, name: &str, port: u16) -> Downstream {
        Downstream {
            mode,
            name: name.into(),
            host: "127.0.0.1".into(),
            user: LOGIN.into(),
            ssh_options: format!("-p {port}"),
        }
    }

    fn line(&self) -> String {
        assert!(
            self.ssh_options.matches(' ').count() <= 1,
            "runmirrors mangles per-mirror ssh options with more than one space: {:?}",
            self.ssh_options
        );
        format!(
            "{} {} {} {} {}\n",
            self.mode.word(),
            self.name,
            self.host,
            self.user,
            self.ssh_options
        )
    }
}

/// The pushing side: the `archvsync` account with runmirrors' directories,
/// key, known_hosts and a recording `sendmail`.
pub struct Runmirrors {
    pub user: UserInfo,
    /// `~/.config/ftpsync`.
    pub conf_dir: PathBuf,
    /// `~/.local/log/ftpsync`.
    pub log_dir: PathBuf,
    /// `~/.local/lock/ftpsync`.
    pub lock_dir: PathBuf,
    /// runmirrors' `BASEDIR` (it `cd`s there; nothing is read from it).
    pub basedir: PathBuf,
    /// Where the fake sendmail appends mails.
    pub mailbox: PathBuf,
    /// `PUSHDELAY` written into each config (seconds).
    pub push_delay: u64,
    _sendmail: Option<BindMount>,
}

impl Runmirrors {
    /// Creates `archvsync` on `mh`'s host with `key` (a private key file) as
    /// its push key and `mh`'s sshd host key as its only known host.
    pub fn new(mh: &mut MirrorHost, key: &Path) -> Runmirrors {
        let runmirrors = require_tool("runmirrors");
        assert!(runmirrors.is_file());
        let user = mh.host.add_user(PUSHER, &UserOpts::default());
        let home = user.home.clone();
        let ssh_dir = home.join(".ssh");
        let conf_dir = home.join(".config/ftpsync");
        let log_dir = home.join(".local/log/ftpsync");
        let lock_dir = home.join(".local/lock/ftpsync");
        for d in [&ssh_dir, &conf_dir, &log_dir, &lock_dir] {
            fs::create_dir_all(d).unwrap();
        }
        set_mode(&ssh_dir, 0o700);
        fs::copy(key, ssh_dir.join("pushmirror")).unwrap();
        set_mode(&ssh_dir.join("pushmirror"), 0o600);

        let port = mh.host.sshd().port();
        let host_key = fs::read_to_string(mh.path("sshd/host_ed25519.pub")).unwrap();
        let mut parts = host_key.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        fs::write(
            ssh_dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {blob}\n"),
        )
        .unwrap();
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{PUSHER}:{PUSHER}"))
                .arg(&home),
        );

        let basedir = mh.upstream.clone();
        let mail_dir = mh.path("mail");
        fs::create_dir_all(&mail_dir).unwrap();
        chown(&mail_dir, Some(user.uid), Some(user.gid)).unwrap();
        let mailbox = mail_dir.join("sent");
        let fake = mh.path("sendmail");
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\n{{ echo \"=== sendmail $*\"; cat; }} >> '{}'\n",
                mailbox.display()
            ),
        )
        .unwrap();
        set_mode(&fake, 0o755);
        // ftpsync depends on an MTA, so there is a sendmail to cover; were
        // there none, runmirrors' `sendmail ... || :` would just fail.
        let sendmail = Path::new("/usr/sbin/sendmail")
            .exists()
            .then(|| BindMount::new(&fake, Path::new("/usr/sbin/sendmail")));

        Runmirrors {
            user,
            conf_dir,
            log_dir,
            lock_dir,
            basedir,
            mailbox,
            push_delay: 60,
            _sendmail: sendmail,
        }
    }

    /// runmirrors' config name for `archive`: `runmirrors` or
    /// `runmirrors-ARCHIVE`.
    pub fn name(archive: &str) -> String {
        if archive.is_empty() {
            "runmirrors".into()
        } else {
            format!("runmirrors-{archive}")
        }
    }

    /// Writes `runmirrors[-ARCHIVE].conf` and `.mirror` for `downstreams`;
    /// `extra` is appended to the conf (shell assignments). Returns the
    /// conf's text.
    pub fn configure(&self, archive: &str, downstreams: &[Downstream], extra: &str) -> String {
        let name = Runmirrors::name(archive);
        let mut conf = String::new();
        writeln!(
            conf,
            "# runmirrors config written by syncgate's e2e harness"
        )
        .unwrap();
        writeln!(conf, "MAILTO=\"{PUSHER}@localhost\"").unwrap();
        writeln!(conf, "KEYFILE=.ssh/pushmirror").unwrap();
        writeln!(conf, "BASEDIR=\"{}\"", self.basedir.display()).unwrap();
        writeln!(
            conf,
            "SSH_OPTS=\"-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes\""
        )
        .unwrap();
        writeln!(conf, "PUSHDELAY={}", self.push_delay).unwrap();
        conf.push_str(extra);
        let mirrors: String = downstreams.iter().map(Downstream::line).collect();
        for (file, text) in [
            (format!("{name}.conf"), &conf),
            (format!("{name}.mirror"), &mirrors),
        ] {
            let p = self.conf_dir.join(file);
            fs::write(&p, text).unwrap();
            chown(&p, Some(self.user.uid), Some(self.user.gid)).unwrap();
        }
        conf
    }

    /// The command line [`Runmirrors::push`] runs (as `archvsync`, through
    /// `runuser`): `runmirrors` for the empty archive, else
    /// `runmirrors -a ARCHIVE`, plus `extra_args`.
    pub fn command(&self, archive: &str, extra_args: &[&str]) -> Command {
        let mut cmd = Command::new(require_tool("runuser"));
        cmd.args(["-u", PUSHER, "--"])
            .arg(require_tool("runmirrors"));
        if !archive.is_empty() {
            cmd.args(["-a", archive]);
        }
        cmd.args(extra_args)
            .env_clear()
            .env("PATH", super::host::CLEAN_PATH)
            .env("LC_ALL", "C")
            .env("HOME", &self.user.home)
            .env("LOGNAME", PUSHER)
            .env("USER", PUSHER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs runmirrors for `archive` (configured with
    /// [`Runmirrors::configure`]) and waits, at most `limit`, until it has
    /// exited and every trigger it backgrounded has finished (they hold its
    /// stdout and stderr open). Past `limit` it kills every process of
    /// `archvsync` and panics with what it has.
    #[track_caller]
    pub fn push(&self, archive: &str, limit: Duration) -> Push {
        let name = Runmirrors::name(archive);
        let mut cmd = self.command(archive, &[]);
        let command = describe(&cmd);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        let (tx, rx) = mpsc::channel();
        for (i, mut pipe) in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .enumerate()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = pipe.read_to_end(&mut v);
                let _ = tx.send((i, v, t0.elapsed()));
            });
        }
        drop(tx);
        let deadline = t0 + limit;
        let give_up = |exited: Option<ExitStatus>| -> ! {
            procs::kill_all(&procs::pids_of_user(self.user.uid));
            let partial = Push {
                command: command.clone(),
                status: exited.unwrap_or_else(|| ExitStatus::from_raw(9)),
                exited_after: Duration::ZERO,
                done_after: t0.elapsed(),
                stdout: String::new(),
                stderr: String::new(),
                log: self.read_log(&name),
                mirror_logs: self.mirror_logs(),
                mails: fs::read_to_string(&self.mailbox).unwrap_or_default(),
            };
            panic!(
                "{command} (or a trigger it started) did not finish within {limit:?}\n{}",
                partial.report()
            );
        };
        // runmirrors itself exits early ...
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                give_up(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let exited_after = t0.elapsed();
        // ... its triggers close the pipes they inherited when they end.
        let mut streams: [Option<Vec<u8>>; 2] = [None, None];
        let mut done_after = exited_after;
        while streams.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, v, at)) => {
                    streams[i] = Some(v);
                    done_after = done_after.max(at);
                }
                Err(_) => give_up(Some(status)),
            }
        }
        let [out, err] = streams.map(|s| String::from_utf8_lossy(&s.unwrap()).into_owned());
        Push {
            command,
            status,
            exited_after,
            done_after,
            stdout: out,
            stderr: err,
            log: self.read_log(&name),
            mirror_logs: self.mirror_logs(),
            mails: fs::read_to_string(&self.mailbox).unwrap_or_default(),
        }
    }

    fn read_log(&self, name: &str) -> String {
        fs::read_to_string(self.log_dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every `LOGDIR/NAME.log` that is not runmirrors' own (nor a rotated
    /// one): downstream name → text.
    fn mirror_logs(&self) -> BTreeMap<String, String> {
        let mut logs = BTreeMap::new();
        for e in fs::read_dir(&self.log_dir).into_iter().flatten().flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".log") {
                if !name.starts_with("runmirrors") {
                    logs.insert(
                        name.to_string(),
                        fs::read_to_string(e.path()).unwrap_or_default(),
                    );
                }
            }
        }
        logs
    }
}

/// One runmirrors invocation, finished.
#[derive(Debug)]
pub struct Push {
    pub command: String,
    /// runmirrors' own exit status.
    pub status: ExitStatus,
    /// When runmirrors exited (it does not wait for its triggers).
    pub exited_after: Duration,
    /// When the last backgrounded trigger finished.
    pub done_after: Duration,
    pub stdout: String,
    pub stderr: String,
    /// `LOGDIR/runmirrors[-ARCHIVE].log`.
    pub log: String,
    /// Downstream name → `LOGDIR/NAME.log` (each trigger's ssh output).
    pub mirror_logs: BTreeMap<String, String>,
    /// Everything the fake sendmail received.
    pub mails: String,
}

impl Push {
    /// Everything about it, for failure messages.
    pub fn report(&self) -> String {
        let mut r = format!(
            "command: {}\nstatus: {} (exited after {:?}, triggers done after {:?})\n\
             --- stdout ---\n{}--- stderr ---\n{}--- runmirrors log ---\n{}",
            self.command,
            self.status,
            self.exited_after,
            self.done_after,
            self.stdout,
            self.stderr,
            self.log
        );
        for (name, text) in &self.mirror_logs {
            write!(r, "--- {name}.log ---\n{text}").unwrap();
        }
        write!(r, "--- mails ---\n{}--- (end) ---", self.mails).unwrap();
        r
    }

    /// The lines of runmirrors' own log containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<&str> {
        self.log.lines().filter(|l| l.contains(needle)).collect()
    }

    /// One-line timing summary.
    pub fn timing(&self) -> String {
        format!(
            "{}: exit {} after {:.2?}, triggers done after {:.2?}",
            self.command,
            self.status
                .code()
                .map_or("signal".into(), |c| c.to_string()),
            self.exited_after,
            self.done_after
        )
    }
}

/// `mount --bind SOURCE TARGET` (following a symlink at TARGET), undone on
/// drop. Only inside the private namespace.
pub struct BindMount(PathBuf);

impl BindMount {
    pub fn new(source: &Path, target: &Path) -> BindMount {
        super::ns::assert_private_namespace();
        let target =
            fs::canonicalize(target).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        run_ok(Command::new("mount").arg("--bind").arg(source).arg(&target));
        BindMount(target)
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
