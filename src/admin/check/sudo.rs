//! The sudo rule, tested as the gate uses it, and every grant beyond it.

use std::collections::BTreeMap;
use std::process::Command;

use crate::admin::check::sudo_grants;
use crate::admin::check::Report;
use crate::config::{Config, Privilege};
use crate::runner::argv::{self, OwnerVerb};
use crate::sys::child::SAFE_PATH;

/// Runs sudo with `args` as the login account (from root through runuser,
/// or directly when check runs as that account), in a clean environment
/// and with wide columns so that `sudo -ll` wraps no line.
fn sudo_as_login(cfg: &Config, args: &[&str]) -> Result<std::process::Output, String> {
    let me = nix::unistd::getuid();
    let login_uid = crate::config::lookup_uid(&cfg.login_user);
    let mut cmd = if me.is_root() {
        let mut c = Command::new("/usr/sbin/runuser");
        c.args(["-u", &cfg.login_user, "--", argv::SUDO]);
        c
    } else if Some(me.as_raw()) == login_uid {
        Command::new(argv::SUDO)
    } else {
        return Err(format!(
            "run check as root or as {} to test the sudo rule",
            cfg.login_user
        ));
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("COLUMNS", "100000");
    cmd.output().map_err(|e| format!("cannot run sudo: {e}"))
}

/// Asks sudo, as the login account, whether it would run `argv` as `owner`.
fn sudo_allows(cfg: &Config, owner: &str, argv: &[String]) -> Result<bool, String> {
    let mut args = vec!["-n", "-l", "-u", owner];
    args.extend(argv.iter().map(String::as_str));
    Ok(sudo_as_login(cfg, &args)?.status.success())
}

pub(super) fn check_sudo(cfg: &Config, r: &mut Report) {
    if cfg.privilege != Privilege::Sudo {
        r.ok("privilege = \"direct\": owner-side commands run as the calling user; no sudo rule needed");
        return;
    }
    if let Err(e) = crate::admin::sudoers::render(cfg) {
        r.fail(
            format!("no safe sudoers rule can be made for this config: {e}"),
            "change the config as the message says, then `syncgate sudoers --install`",
        );
    }
    for m in cfg.mirrors.values() {
        for verb in OwnerVerb::ALL {
            let a = argv::owner_command(cfg, m, verb);
            match sudo_allows(cfg, &m.owner, &a) {
                Ok(true) => r.ok(format!("sudo lets {} run `{}` as {}", cfg.login_user, argv::render(&a), m.owner)),
                Ok(false) => r.fail(
                    format!("sudo does not let {} run `{}` as {} (the rule is missing or no longer matches this config)", cfg.login_user, argv::render(&a), m.owner),
                    "syncgate sudoers --install",
                ),
                Err(e) => {
                    r.warn(e, "run check as root");
                    return;
                }
            }
        }
        let base = argv::owner_command(cfg, m, OwnerVerb::Transfer);
        let mut extra = base.clone();
        extra.push("--all".into());
        let mut other = base.clone();
        *other.last_mut().expect("argv") = format!("{}-other", m.name);
        let mut other_config = base.clone();
        other_config[2] = "/tmp/syncgate.toml".into();
        let rsync_sh = vec![
            cfg.rsync.display().to_string(),
            "-e".into(),
            "sh".into(),
            "x:".into(),
            m.dest.display().to_string(),
        ];
        let variants: Vec<(&str, &str, Vec<String>)> = vec![
            ("an extra argument", m.owner.as_str(), extra),
            ("another mirror's name", m.owner.as_str(), other),
            ("another config file", m.owner.as_str(), other_config),
            ("the same command as root", "root", base.clone()),
            ("rsync with -e sh", m.owner.as_str(), rsync_sh),
            ("a shell", m.owner.as_str(), vec!["/bin/sh".into()]),
        ];
        for (what, runas, a) in variants {
            match sudo_allows(cfg, runas, &a) {
                Ok(false) => r.ok(format!("sudo refuses {what} ({} as {runas})", argv::render(&a))),
                Ok(true) => r.fail(
                    format!("sudo ALLOWS {what}: `{}` as {runas}; the sudoers rules are wider than syncgate needs", argv::render(&a)),
                    "remove broader rules for the login account; install only `syncgate sudoers`",
                ),
                Err(e) => r.warn(e, "run check as root"),
            }
        }
    }
}

/// Everything sudo grants the login account, against the generated rule.
pub(super) fn check_sudo_grants(cfg: &Config, r: &mut Report) {
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in cfg.mirrors.values() {
        for verb in OwnerVerb::ALL {
            wanted
                .entry(m.owner.clone())
                .or_default()
                .push(argv::owner_command(cfg, m, verb).join(" "));
        }
    }
    let text = match sudo_as_login(cfg, &["-n", "-ll"]) {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            r.fail(
                format!(
                    "sudo -n -ll as {} failed: {}",
                    cfg.login_user,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "syncgate sudoers --install",
            );
            return;
        }
        Err(e) => {
            r.warn(e, "run check as root");
            return;
        }
    };
    let problems = sudo_grants::problems(&sudo_grants::parse(&text), &wanted);
    if problems.is_empty() {
        r.ok(format!(
            "sudo grants {} nothing beyond the generated rule (sudo -ll)",
            cfg.login_user
        ));
    }
    for p in problems {
        r.fail(
            format!("sudo grants {} more than syncgate's rule: {p}", cfg.login_user),
            "remove that rule or Defaults entry from /etc/sudoers and /etc/sudoers.d; install only `syncgate sudoers --install`",
        );
    }
}
