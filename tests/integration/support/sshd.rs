//! A real OpenSSH server on 127.0.0.1 and a matching client command.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::procs::ChildGuard;
use super::{free_port, require_tool, run_ok, wait_for_port};

/// How long sshd gets to start accepting connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `sshd -D` with its own host key, config and log in `dir`. Stopped on drop
/// (SIGTERM to the listener and its sessions, then SIGKILL).
pub struct Sshd {
    port: u16,
    dir: PathBuf,
    guard: ChildGuard,
}

impl Sshd {
    /// Creates `dir`, a host key and an `sshd_config` (plus `extra_config`
    /// lines), starts `/usr/sbin/sshd -D -e -f CFG -E dir/sshd.log` and waits
    /// until its port accepts connections. Needs root and `/run/sshd`.
    pub fn start(dir: &Path, extra_config: &str) -> Sshd {
        let sshd = require_tool("sshd");
        fs::create_dir_all(dir).expect("mkdir sshd dir");
        let host_key = dir.join("host_ed25519");
        if !host_key.exists() {
            run_ok(
                Command::new(require_tool("ssh-keygen"))
                    .args([
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        "syncgate-e2e-host",
                        "-f",
                    ])
                    .arg(&host_key),
            );
        }
        let port = free_port();
        let config = dir.join("sshd_config");
        fs::write(&config, config_text(port, dir, &host_key, extra_config))
            .expect("write sshd_config");
        run_ok(Command::new(&sshd).arg("-t").arg("-f").arg(&config));

        let log = dir.join("sshd.log");
        let stderr = File::create(dir.join("sshd.stderr")).expect("create sshd.stderr");
        let mut guard = ChildGuard::spawn(
            Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr),
            "sshd",
        );
        let ready = wait_for_port(port, START_TIMEOUT) && guard.is_running();
        let sshd = Sshd {
            port,
            dir: dir.to_path_buf(),
            guard,
        };
        assert!(
            ready,
            "sshd did not start listening on 127.0.0.1:{port}:\n{}",
            sshd.log()
        );
        sshd
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listener's pid.
    pub fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// The config file in use.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    /// Everything sshd logged so far (LogLevel VERBOSE) plus its stderr.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default();
        let err = fs::read_to_string(self.dir.join("sshd.stderr")).unwrap_or_default();
        if err.is_empty() {
            log
        } else {
            format!("{log}--- sshd stderr ---\n{err}")
        }
    }

    /// `ssh -F /dev/null -i KEY -p PORT -o StrictHostKeyChecking=no
    /// -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR
    /// -o ConnectTimeout=10 ... USER@127.0.0.1 [CMD]`, ignoring any ssh
    /// config and agent of the invoking user. The caller picks stdin
    /// (use `Stdio::null()` unless the remote side reads it).
    pub fn ssh(&self, user: &str, key: &Path, remote_command: Option<&str>) -> Command {
        let mut cmd = Command::new(require_tool("ssh"));
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(key)
            .args(["-p", &self.port.to_string()])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "IdentityAgent=none"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=10"])
            .arg(format!("{user}@127.0.0.1"))
            .env_remove("SSH_AUTH_SOCK");
        if let Some(remote) = remote_command {
            cmd.arg(remote);
        }
        cmd
    }
}

/// The test sshd's configuration. No PAM (so no `/etc/pam.d` surprises; hence
/// the `usermod -p '*'` in `add_user`), keys only, no client environment
/// (`AcceptEnv` is unset, i.e. nothing is accepted), generous connection
/// limits for load tests.
fn config_text(port: u16, dir: &Path, host_key: &Path, extra: &str) -> String {
    format!(
        "Port {port}
ListenAddress 127.0.0.1
HostKey {key}
PidFile {pid}
UsePAM no
StrictModes yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
MaxStartups 200:30:300
MaxSessions 100
LogLevel VERBOSE
PermitUserEnvironment no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
{penalties}{extra}
",
        penalties = if openssh_version() >= (9, 8) {
            // 9.8+ would block 127.0.0.1 after a few failed/aborted sessions.
            "PerSourcePenalties no\n"
        } else {
            ""
        },
        key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
    )
}

/// (major, minor) of the installed OpenSSH, from `ssh -V` ("OpenSSH_9.2p1 ...").
pub fn openssh_version() -> (u32, u32) {
    let out = Command::new(require_tool("ssh"))
        .arg("-V")
        .output()
        .expect("ssh -V");
    let text = String::from_utf8_lossy(&out.stderr);
    let version = text.strip_prefix("OpenSSH_").unwrap_or_default();
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (next(), next())
}
