//! `syncgate check`: a diagnosis for admins. One line per finding, each
//! problem with a fix; exits 1 if anything is wrong.
//!
//! The sudo rules are tested the way the gate will use them: as the login
//! account, with `sudo -n -l -u OWNER <argv>` for the exact argv from
//! [`crate::runner::argv`], and a set of variants that must be refused.

mod accounts;
mod hub;
pub mod keys;
mod layout;
mod programs;
mod sudo;
pub mod sudo_grants;

use crate::config::{Config, Privilege};
use crate::error::Exit;

pub use crate::admin::check::keys::{key_line_problem, key_options};
pub use accounts::shell_problem;
use accounts::{check_accounts, check_config_file, check_dirs};
use programs::check_programs;
pub use programs::rsync_version;
use sudo::{check_sudo, check_sudo_grants};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

#[derive(Default)]
pub struct Report {
    pub lines: Vec<(Severity, String)>,
}

impl Report {
    fn ok(&mut self, msg: impl Into<String>) {
        self.lines.push((Severity::Ok, msg.into()));
    }
    fn warn(&mut self, msg: impl Into<String>, fix: impl AsRef<str>) {
        self.lines.push((
            Severity::Warn,
            format!("{}; fix: {}", msg.into(), fix.as_ref()),
        ));
    }
    fn fail(&mut self, msg: impl Into<String>, fix: impl AsRef<str>) {
        self.lines.push((
            Severity::Fail,
            format!("{}; fix: {}", msg.into(), fix.as_ref()),
        ));
    }
    pub fn failed(&self) -> bool {
        self.lines.iter().any(|(s, _)| *s == Severity::Fail)
    }
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (s, m) in &self.lines {
            let tag = match s {
                Severity::Ok => "ok  ",
                Severity::Warn => "WARN",
                Severity::Fail => "FAIL",
            };
            out.push_str(&format!("{tag} {m}\n"));
        }
        let fails = self
            .lines
            .iter()
            .filter(|(s, _)| *s == Severity::Fail)
            .count();
        let warns = self
            .lines
            .iter()
            .filter(|(s, _)| *s == Severity::Warn)
            .count();
        out.push_str(&format!("{fails} problem(s), {warns} warning(s)\n"));
        out
    }
    /// 1 if anything is wrong, else 0.
    pub fn exit(&self) -> Exit {
        if self.failed() {
            Exit::SyncFailed
        } else {
            Exit::Ok
        }
    }
}

/// Whether a file or directory is safe from group and others' writes.
fn mode_ok(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    md.mode() & 0o022 == 0
}

pub fn check(cfg: &Config) -> Report {
    let mut r = Report::default();
    r.ok(format!("config {} parses", cfg.path.display()));
    if cfg.privilege == Privilege::Sudo {
        check_config_file(cfg, &mut r);
        check_accounts(cfg, &mut r);
    }
    check_dirs(cfg, &mut r);
    check_programs(cfg, &mut r);
    check_sudo(cfg, &mut r);
    if cfg.privilege == Privilege::Sudo {
        check_sudo_grants(cfg, &mut r);
    }
    check_audit(cfg, &mut r);
    check_pushers(cfg, &mut r);
    hub::check_hub(cfg, &mut r);
    r
}

/// Keys Debian's runmirrors pushes with: it notices no exit status but
/// ssh's 255, so a refused or failed push looks like success there unless
/// the key says `runmirrors = true`.
fn check_pushers(cfg: &Config, r: &mut Report) {
    for k in cfg.keys.values() {
        let pushed =
            std::fs::symlink_metadata(crate::queue::statedir::push_marker(&cfg.state_dir, &k.name))
                .is_ok();
        if k.runmirrors {
            r.ok(format!("key {}: runmirrors = true: a push that does not succeed exits 255, which runmirrors logs as `trigger failed` and mails", k.name));
        } else if pushed {
            r.warn(
                format!("key {} has received Debian push words (runmirrors), but runmirrors takes every exit status except ssh's 255 for success: a refused or failed push shows only in syncgate's audit log and status", k.name),
                format!("set runmirrors = true in [key.{}]", k.name),
            );
        }
    }
}

/// Where the audit trail goes: a missing syslog socket, or lines in the
/// fallback file, mean that `/var/log/auth.log` (or the journal) lacks them.
fn check_audit(cfg: &Config, r: &mut Report) {
    use std::os::unix::fs::FileTypeExt;
    let sock = &cfg.syslog.socket;
    match std::fs::metadata(sock) {
        Ok(md) if md.file_type().is_socket() => {
            r.ok(format!("syslog socket {} is there", sock.display()))
        }
        _ => r.warn(
            format!(
                "no syslog socket at {}: audit lines go to {} instead of syslog",
                sock.display(),
                cfg.state_dir.join(crate::audit::FALLBACK_FILE).display()
            ),
            "apt-get install rsyslog, and start it if nothing did (systemctl start rsyslog, or rsyslogd); or run systemd-journald",
        ),
    }
    let file = cfg.state_dir.join(crate::audit::FALLBACK_FILE);
    if let Ok(md) = std::fs::symlink_metadata(&file) {
        if md.len() > 0 {
            r.warn(
                format!(
                    "{} holds {} bytes of audit lines that syslog did not take",
                    file.display(),
                    md.len()
                ),
                "read them (README \"Reading the audit log\"), fix syslog, then rotate the file",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::programs::RSYNC_SAFE_LINKS;
    use super::*;
    use std::path::Path;

    #[test]
    fn shells_that_cannot_run_a_forced_command_are_caught() {
        assert!(shell_problem(Path::new("/bin/sync"))
            .unwrap()
            .contains("invalid option"));
        assert!(shell_problem(Path::new("/usr/sbin/nologin")).is_some());
        assert!(shell_problem(Path::new("/bin/false")).is_some());
        assert!(shell_problem(Path::new("/usr/bin/python3")).is_some());
        assert_eq!(shell_problem(Path::new("/bin/sh")), None);
    }

    #[test]
    fn rsync_versions_are_read_from_the_first_line() {
        let v = "rsync  version 3.5.0  protocol version 32\nCopyright";
        assert_eq!(rsync_version(v), Some((3, 5)));
        assert_eq!(
            rsync_version("rsync  version 3.2.7  protocol version 31"),
            Some((3, 2))
        );
        assert_eq!(rsync_version("rsync  version v3.4.1pre1  protocol"), None);
        assert_eq!(
            rsync_version("rsync  version 3.4pre1  protocol"),
            Some((3, 4))
        );
        assert_eq!(rsync_version(""), None);
        assert!(
            (3, 2) < RSYNC_SAFE_LINKS && (3, 4) >= RSYNC_SAFE_LINKS && (4, 0) > RSYNC_SAFE_LINKS
        );
    }
}
