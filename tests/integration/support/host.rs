//! A throwaway host inside the private namespace.
//!
//! [`Host::new`] gives the namespace its own `/etc` (a copy, bind-mounted over
//! the real one), empty tmpfs `/home` and `/run` (and over the few `/var`
//! directories that `useradd`, `sudo` and `sshd` write to), and a loopback
//! interface. Users, groups and sudoers files then exist only in here.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::unistd::{Group, User};
use tempfile::TempDir;

use super::sshd::Sshd;
use super::syslog::SyslogReceiver;
use super::{ns, procs, require_tool, run_ok};

/// `PATH` for commands run on behalf of test users.
pub const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Directories replaced by an empty tmpfs (if they exist): accounts' homes,
/// runtime state (sshd privsep dir, sudo timestamps, nscd socket), logs
/// (`useradd` writes lastlog/faillog), mail spools, sudo's lecture records.
const TMPFS_DIRS: &[&str] = &["/home", "/run", "/var/log", "/var/mail", "/var/lib/sudo"];

/// Options for [`Host::add_user`].
#[derive(Debug, Clone)]
pub struct UserOpts {
    /// Login shell; sshd runs forced commands as `SHELL -c CMD`.
    pub shell: String,
    /// Supplementary groups (must exist).
    pub groups: Vec<String>,
    /// Home directory; default `/home/NAME`. Must be under `/home` or the
    /// workspace when `create_home` is set (never on the real disk).
    pub home: Option<PathBuf>,
    /// Create the home directory (`useradd -m`).
    pub create_home: bool,
    /// System account (`useradd -r`: uid below 1000).
    pub system: bool,
}

impl Default for UserOpts {
    fn default() -> Self {
        UserOpts {
            shell: "/bin/sh".into(),
            groups: Vec::new(),
            home: None,
            create_home: true,
            system: false,
        }
    }
}

/// An account created by [`Host::add_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The namespace's host. Dropping it stops sshd and every process of the
/// users it created, then unmounts what it mounted.
pub struct Host {
    sshd: Option<Sshd>,
    uids: Vec<u32>,
    mounts: Vec<PathBuf>,
    ws: TempDir,
}

impl Host {
    /// Sets up the private host. Only inside the namespace, as root.
    pub fn new() -> Host {
        ns::assert_private_namespace();
        let ws = tempfile::Builder::new()
            .prefix(&ns::temp_prefix("host"))
            .tempdir()
            .expect("create workspace");
        let mut host = Host {
            sshd: None,
            uids: Vec::new(),
            mounts: Vec::new(),
            ws,
        };
        // A tmpfs: copying /etc to this disk took ~1 s, to memory ~50 ms.
        // Mode 0755: test users must reach sockets and binaries in it.
        let ws_path = host.workspace().to_path_buf();
        host.mount(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs"])
                .arg(&ws_path),
            &ws_path,
        );

        let etc = host.path("etc");
        run_ok(Command::new("cp").arg("-a").arg("/etc").arg(&etc));
        host.mount(
            Command::new("mount").arg("--bind").arg(&etc).arg("/etc"),
            "/etc",
        );
        for dir in TMPFS_DIRS.iter().map(Path::new).filter(|d| d.is_dir()) {
            let mode = fs::metadata(dir).expect("stat").permissions().mode() & 0o7777;
            let opts = format!("mode={mode:o}");
            host.mount(
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
                    .arg(dir),
                dir,
            );
        }
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        set_mode(Path::new("/run/sshd"), 0o755);
        run_ok(Command::new(require_tool("ip")).args(["link", "set", "lo", "up"]));
        host
    }

    fn mount(&mut self, cmd: &mut Command, target: impl AsRef<Path>) {
        run_ok(cmd);
        self.mounts.push(target.as_ref().to_path_buf());
    }

    /// The workspace directory: a tmpfs (mode 0755) visible only inside the
    /// namespace, mounted on a temporary directory that is removed on drop.
    pub fn workspace(&self) -> &Path {
        self.ws.path()
    }

    /// `rel` inside the workspace.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.ws.path().join(rel)
    }

    /// Creates group `name` (`groupadd`); returns its gid.
    pub fn add_group(&mut self, name: &str) -> u32 {
        run_ok(Command::new(require_tool("groupadd")).arg(name));
        Group::from_name(name)
            .expect("getgrnam")
            .expect("group just added")
            .gid
            .as_raw()
    }

    /// Creates user `name` with `useradd` and makes it key-login capable
    /// (`usermod -p '*'`: useradd's `!` password means "locked" to sshd).
    pub fn add_user(&mut self, name: &str, opts: &UserOpts) -> UserInfo {
        let mut cmd = Command::new(require_tool("useradd"));
        cmd.args(["-s", &opts.shell]);
        if let Some(home) = &opts.home {
            assert!(
                !opts.create_home
                    || home.starts_with("/home")
                    || home.starts_with(self.workspace()),
                "home {} would be created on the real disk; use /home/... or host.path(...)",
                home.display()
            );
            cmd.arg("-d").arg(home);
        }
        cmd.arg(if opts.create_home { "-m" } else { "-M" });
        if opts.system {
            cmd.arg("-r");
        }
        if !opts.groups.is_empty() {
            cmd.args(["-G", &opts.groups.join(",")]);
        }
        run_ok(cmd.arg(name));
        run_ok(Command::new(require_tool("usermod")).args(["-p", "*", name]));
        let user = self.user(name);
        self.uids.push(user.uid);
        user
    }

    /// Looks up an existing account (panics if there is none).
    pub fn user(&self, name: &str) -> UserInfo {
        let u = User::from_name(name)
            .expect("getpwnam")
            .unwrap_or_else(|| panic!("no user {name}"));
        UserInfo {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }
    }

    /// Whether the (namespace's) account database knows `name`.
    pub fn user_exists(&self, name: &str) -> bool {
        User::from_name(name).expect("getpwnam").is_some()
    }

    /// Checks sudoers `content` with `visudo -cf`; `Err` carries visudo's
    /// complaint (e.g. `syntax error near line 1`).
    pub fn check_sudoers(&self, content: &str) -> Result<(), String> {
        let draft = tempfile::Builder::new()
            .prefix("sudoers-draft-")
            .tempfile_in(self.workspace())
            .expect("create sudoers draft");
        fs::write(draft.path(), content).expect("write sudoers draft");
        set_mode(draft.path(), 0o440);
        let out = Command::new(require_tool("visudo"))
            .arg("-cf")
            .arg(draft.path())
            .output()
            .expect("run visudo");
        if out.status.success() {
            Ok(())
        } else {
            Err(super::show(&out))
        }
    }

    /// Validates `content` with `visudo -cf` and installs it as
    /// `/etc/sudoers.d/FILE_NAME` (root, 0440). Returns the installed path.
    pub fn install_sudoers(&mut self, file_name: &str, content: &str) -> PathBuf {
        // sudo's @includedir silently skips names containing '.' or ending in '~'.
        assert!(
            !file_name.is_empty() && !file_name.contains(['/', '.']) && !file_name.ends_with('~'),
            "sudoers.d file name {file_name:?} would be ignored by sudo"
        );
        if let Err(complaint) = self.check_sudoers(content) {
            panic!("sudoers file {file_name} is invalid:\n{complaint}\n--- content ---\n{content}");
        }
        let dest = Path::new("/etc/sudoers.d").join(file_name);
        fs::write(&dest, content).expect("install sudoers file");
        chown(&dest, Some(0), Some(0)).expect("chown sudoers file");
        set_mode(&dest, 0o440);
        dest
    }

    /// `runuser -u USER -- ARGV...` with an empty environment except `PATH`
    /// and `LC_ALL=C`; stdin is yours to choose.
    pub fn command_as(&self, user: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new(require_tool("runuser"));
        cmd.args(["-u", user, "--"])
            .args(argv)
            .env_clear()
            .env("PATH", CLEAN_PATH)
            .env("LC_ALL", "C");
        cmd
    }

    /// Runs `argv` as `user` (see [`Host::command_as`]), stdin from /dev/null.
    pub fn run_as(&self, user: &str, argv: &[&str]) -> Output {
        self.command_as(user, argv)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("runuser -u {user}: {e}"))
    }

    /// Starts sshd (see [`Sshd`]) and keeps it until the host is dropped.
    pub fn start_sshd(&mut self) -> &Sshd {
        self.start_sshd_with("")
    }

    /// Like [`Host::start_sshd`] with extra `sshd_config` lines appended.
    pub fn start_sshd_with(&mut self, extra_config: &str) -> &Sshd {
        assert!(self.sshd.is_none(), "sshd already started");
        let dir = self.path("sshd");
        self.sshd.insert(Sshd::start(&dir, extra_config))
    }

    /// The running sshd (panics if not started).
    pub fn sshd(&mut self) -> &mut Sshd {
        self.sshd.as_mut().expect("call host.start_sshd() first")
    }

    /// Everything the running sshd logged so far ("(sshd not started)" if
    /// there is none), for failure reports.
    pub fn sshd_log(&self) -> String {
        self.sshd
            .as_ref()
            .map_or_else(|| "(sshd not started)".into(), Sshd::log)
    }

    /// Stops sshd (graceful, then forced), e.g. to restart it with a new config.
    pub fn stop_sshd(&mut self) {
        self.sshd = None;
    }

    /// Creates an ed25519 client key `WS/keys/NAME` without passphrase; returns
    /// (private key path, public key line).
    pub fn client_key(&self, name: &str) -> (PathBuf, String) {
        let dir = self.path("keys");
        fs::create_dir_all(&dir).expect("mkdir keys");
        let key = dir.join(name);
        run_ok(
            Command::new(require_tool("ssh-keygen"))
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key),
        );
        let public = fs::read_to_string(key.with_extension("pub")).expect("read public key");
        (key, public.trim().to_string())
    }

    /// Writes `~user/.ssh/authorized_keys` with one line per (public key line,
    /// options) pair (empty options: plain key), the way the README and the
    /// Debian package set it up: the home, `.ssh` and the file are root's
    /// and not writable by the user, group or others (so the account cannot
    /// swap in a key of its own), which also passes sshd's StrictModes.
    pub fn authorize(&self, user: &str, keys: &[(&str, &str)]) -> PathBuf {
        let u = self.user(user);
        chown(&u.home, Some(0), Some(0)).expect("chown home");
        set_mode(&u.home, 0o755);
        let ssh_dir = u.home.join(".ssh");
        fs::create_dir_all(&ssh_dir).expect("mkdir ~/.ssh");
        chown(&ssh_dir, Some(0), Some(0)).expect("chown ~/.ssh");
        set_mode(&ssh_dir, 0o755);
        let text: String = keys
            .iter()
            .map(|(key, opts)| {
                if opts.is_empty() {
                    format!("{key}\n")
                } else {
                    format!("{opts} {key}\n")
                }
            })
            .collect();
        let file = ssh_dir.join("authorized_keys");
        fs::write(&file, text).expect("write authorized_keys");
        chown(&file, Some(0), Some(0)).expect("chown authorized_keys");
        set_mode(&file, 0o644);
        file
    }

    /// A preconfigured `ssh` client command to `user@127.0.0.1` (see
    /// [`Sshd::ssh`]); panics if sshd is not running.
    pub fn ssh(&self, user: &str, key: &Path, remote_command: Option<&str>) -> Command {
        self.sshd
            .as_ref()
            .expect("call host.start_sshd() first")
            .ssh(user, key, remote_command)
    }

    /// A syslog receiver at `WS/log.sock`, writable by every user.
    pub fn syslog(&self) -> SyslogReceiver {
        SyslogReceiver::bind(self.path("log.sock"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.sshd = None;
        // Forced commands, sudo children and the like of our users. Safe:
        // namespace runs are serialized, so these uids belong to us alone.
        let pids: Vec<i32> = self
            .uids
            .iter()
            .flat_map(|&uid| procs::pids_of_user(uid))
            .collect();
        let survivors = procs::kill_all(&pids);
        if !survivors.is_empty() {
            eprintln!("host: processes survived SIGKILL: {survivors:?}");
        }
        // The namespace dies with the test, but unmount anyway (reverse order,
        // lazily: a straggler may still hold a file open).
        for target in self.mounts.drain(..).rev() {
            let _ = Command::new("umount").arg("-l").arg(&target).status();
        }
    }
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A tmpfs mounted on `target` for the guard's lifetime (namespace only).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(target: &Path, opts: &str) -> Tmpfs {
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
                .arg(target),
        );
        Tmpfs(target.to_path_buf())
    }

    pub fn remount(&self, opts: &str) {
        run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,{opts}")])
                .arg(&self.0),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
