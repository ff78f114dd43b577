//! A hub's downstreams: the ssh program, the known_hosts file (root's,
//! not writable by others, with a host key for every downstream) and the
//! push keys (checked again here, as the config loader did, with a fix).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Report;
use crate::config::Config;

pub(super) fn check_hub(cfg: &Config, r: &mut Report) {
    let Some(hub) = &cfg.hub else { return };
    let downstreams: Vec<_> = cfg
        .mirrors
        .values()
        .flat_map(|m| m.fanout.downstreams.iter().map(move |d| (m, d)))
        .collect();
    match std::fs::metadata(&hub.ssh) {
        Ok(md) if md.is_file() && md.mode() & 0o111 != 0 => r.ok(format!(
            "ssh for downstream pushes is at {}",
            hub.ssh.display()
        )),
        _ => r.fail(
            format!("ssh is missing at {} (hub.ssh)", hub.ssh.display()),
            "apt-get install openssh-client",
        ),
    }
    let kh = &hub.known_hosts;
    match std::fs::symlink_metadata(kh) {
        Ok(md) if md.is_file() && md.uid() == 0 && md.mode() & 0o022 == 0 => {
            r.ok(format!("known_hosts {} is root's and not writable by others", kh.display()))
        }
        Ok(_) => r.fail(
            format!(
                "known_hosts {} must be a regular file owned by root, not writable by group or others: whoever can write it can impersonate a downstream",
                kh.display()
            ),
            format!("chown root:root {0} && chmod 0644 {0}", kh.display()),
        ),
        Err(e) => r.fail(
            format!("known_hosts {}: {e}", kh.display()),
            format!(
                "ssh-keyscan -p PORT HOST >> {} for each downstream, and compare the keys with what the downstream's admin says",
                kh.display()
            ),
        ),
    }
    for (m, d) in downstreams {
        let label = format!(
            "mirror {} downstream {} ({}:{})",
            m.name, d.name, d.host, d.port
        );
        let entry = if d.port == 22 {
            d.host.clone()
        } else {
            format!("[{}]:{}", d.host, d.port)
        };
        let login = crate::config::lookup_uid(&cfg.login_user);
        match std::fs::symlink_metadata(&d.key) {
            Ok(md) if login.is_some() && Some(md.uid()) != login => r.fail(
                format!(
                    "{label}: push key {} belongs to uid {}, so {} cannot read it: every push after an SSH request or a timer run would fail, and {} could not even load the config",
                    d.key.display(),
                    md.uid(),
                    cfg.login_user,
                    cfg.login_user
                ),
                format!("chown {}: {} && chmod 0600 {}", cfg.login_user, d.key.display(), d.key.display()),
            ),
            Ok(_) => r.ok(format!("{label}: push key {} is {}'s alone", d.key.display(), cfg.login_user)),
            Err(e) => r.fail(
                format!("{label}: push key {}: {e}", d.key.display()),
                format!("ssh-keygen -t ed25519 -N '' -f {}", d.key.display()),
            ),
        }
        if has_host_key(kh, &entry) {
            r.ok(format!("{label}: its host key is in {}", kh.display()));
        } else {
            r.fail(
                format!("{label}: no host key for {entry} in {}: every push would fail (StrictHostKeyChecking=yes)", kh.display()),
                format!(
                    "ssh-keyscan -p {} {} >> {} (then verify the key with the downstream's admin)",
                    d.port,
                    d.host,
                    kh.display()
                ),
            );
        }
    }
}

/// Whether `known_hosts` holds a key for `entry` (`host` or
/// `[host]:port`), hashed or not: asks `ssh-keygen -F`, which knows both.
fn has_host_key(known_hosts: &Path, entry: &str) -> bool {
    std::process::Command::new("/usr/bin/ssh-keygen")
        .arg("-F")
        .arg(entry)
        .arg("-f")
        .arg(known_hosts)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
