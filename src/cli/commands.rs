//! One function per command. Each returns `Result<()>`: a refusal, a failed
//! sync or a problem `check` found is an [`Error`] that carries its exit
//! code, and [`crate::run`] turns every error into the exit status.

use std::path::Path;

use crate::admin::status::{self, TextTo};
use crate::admin::{check, sudoers};
use crate::audit::events::Request;
use crate::audit::Audit;
use crate::cli::{generate, Cli, CliTrigger, Command};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::gate::policy;
use crate::run::{Requester, Stage, Trigger};
use crate::sys::{progress, signals};

/// Runs the command the command line names.
pub fn dispatch(cli: &Cli) -> Result<()> {
    let config = cli.config_path();
    match &cli.command {
        Command::Ssh { key } => crate::gate::run(config, key),
        Command::Generate { what } => generate::run(*what),
        Command::AuthorizedKey {
            key,
            from,
            pubkey_file,
        } => cmd_authorized_key(cli, key, from, pubkey_file),
        Command::Sync {
            mirrors,
            all,
            trigger,
            full,
        } => cmd_sync(config, mirrors, *all, *trigger, *full),
        Command::Status {
            mirror,
            json,
            check: false,
        } => cmd_status(config, mirror.as_deref(), *json),
        // Handled before dispatch (its exit status is a plugin's).
        Command::Status { mirror, .. } => {
            let p = status::check(config, mirror.as_deref());
            match p.code() {
                0 => Ok(()),
                _ => Err(Error::Reported(Exit::SyncFailed)),
            }
        }
        Command::History { mirror, json, n } => cmd_history(config, mirror.as_deref(), *json, *n),
        Command::Sudoers { install } => cmd_sudoers(config, *install),
        Command::Check => cmd_check(config),
        Command::Transfer { mirror, full } => cmd_transfer(config, mirror, Stage::All, *full),
        Command::Prepare { mirror } => cmd_transfer(config, mirror, Stage::Stage1, false),
        Command::FixPerms { mirror } => cmd_fix_perms(config, mirror),
        Command::Rollback { mirror, to } => cmd_rollback(config, mirror, to.as_deref()),
        Command::Push { mirror, detached } => cmd_push(config, mirror, *detached),
        Command::OwnerRollback { mirror, to } => {
            let cfg = Config::load(config)?;
            let report = crate::owner::rollback(&cfg, mirror, to.as_deref())?;
            print_report(&report, report.ok)
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// The owner side's one JSON line for the gate. If the gate is already gone
/// there is nobody to tell; that is not an error of the work just done.
/// A report that is not `ok` is a failed sync, already reported.
fn print_report<T: serde::Serialize>(report: &T, ok: bool) -> Result<()> {
    let mut line = serde_json::to_string(report).expect("report serializes");
    line.push('\n');
    out(&line);
    if ok {
        Ok(())
    } else {
        Err(Error::SyncFailed(Exit::SyncFailed))
    }
}

fn who_am_i() -> String {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "?".into());
    format!("user={name} uid={uid}")
}

/// `syncgate authorized-key`.
fn cmd_authorized_key(cli: &Cli, key: &str, from: &[String], pubkey_file: &Path) -> Result<()> {
    let mut nets = Vec::new();
    for f in from {
        nets.push(
            f.parse::<policy::Cidr>()
                .map_err(|e| Error::Usage(format!("--from {f:?}: {e}")))?,
        );
    }
    let pubkey = std::fs::read_to_string(pubkey_file)
        .map_err(|e| Error::Usage(format!("{}: {e}", pubkey_file.display())))?;
    let binary = Config::load(cli.config_path())
        .map(|c| c.binary)
        .unwrap_or_else(|_| std::path::PathBuf::from("/usr/bin/syncgate"));
    let line =
        crate::gate::authorized_key_line(&binary, cli.config.as_deref(), key, &nets, &pubkey)?;
    out(&format!("{line}\n"));
    Ok(())
}

/// `syncgate sync`: a local request (command line or timer).
fn cmd_sync(
    config: &Path,
    mirrors: &[String],
    all: bool,
    trigger: CliTrigger,
    full: bool,
) -> Result<()> {
    let cfg = Config::load(config)?;
    signals::install();
    let mirrors = if all {
        cfg.mirror_names()
    } else {
        mirrors.to_vec()
    };
    let trigger = match trigger {
        CliTrigger::Cli => Trigger::Cli,
        CliTrigger::Timer => Trigger::Timer,
    };
    let mut req = Requester::new(trigger, who_am_i());
    req.full = full;
    let mut audit = Audit::open(&cfg.syslog);
    audit.record(&Request {
        req: &req,
        mirrors: &mirrors,
    });
    crate::runner::sync::sync(&cfg, &mirrors, &req, None, &mut audit)
}

/// `syncgate status`.
fn cmd_status(config: &Path, mirror: Option<&str>, json: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let names = match mirror {
        Some(m) => vec![cfg.mirror(m)?.name.clone()],
        None => cfg.mirror_names(),
    };
    status::show(&cfg, &names, json, TextTo::Stdout)
}

/// `syncgate history [MIRROR] [--json] [-n N]`: the last `n` finished runs
/// (0: all kept), of one mirror or of all of them merged by start time,
/// newest last. A mirror without a history file yet shows the runs its
/// state file keeps.
fn cmd_history(config: &Path, mirror: Option<&str>, json: bool, n: usize) -> Result<()> {
    let cfg = Config::load(config)?;
    let names = match mirror {
        Some(m) => vec![cfg.mirror(m)?.name.clone()],
        None => cfg.mirror_names(),
    };
    let sd = crate::queue::statedir::StateDir::open(&cfg.state_dir)?;
    let keep = if n == 0 { usize::MAX } else { n };
    let mut all = Vec::new();
    for name in &names {
        let read = crate::queue::history::last(&sd, name, keep, 2 * cfg.history_size)?;
        for w in &read.warnings {
            progress::say(&format!("warning: {w}"));
        }
        if read.runs.is_empty() {
            let st = crate::queue::state::MirrorState::load(&sd, name)?.state;
            let skip = st.runs.len().saturating_sub(keep);
            all.extend(
                st.runs
                    .into_iter()
                    .skip(skip)
                    .map(|record| crate::queue::history::Entry {
                        mirror: name.clone(),
                        record,
                    }),
            );
        } else {
            all.extend(read.runs);
        }
    }
    all.sort_by_key(|e| (e.record.started, e.record.run));
    let skip = all.len().saturating_sub(keep);
    let mut text = String::new();
    for e in all.iter().skip(skip) {
        if json {
            text.push_str(&serde_json::to_string(e).expect("a run record serializes"));
        } else {
            text.push_str(&history_line(e));
        }
        text.push('\n');
    }
    if all.is_empty() && !json {
        progress::say("no runs recorded yet");
    }
    out(&text);
    Ok(())
}

/// One run for people: start, mirror, run, result, duration, trigger and
/// requester, what it moved, and its message.
fn history_line(e: &crate::queue::history::Entry) -> String {
    let r = &e.record;
    let mut line = format!(
        "{}  {}  #{}  {}  {}  {} {}  {} files, {}, {} deleted",
        crate::sys::timefmt::iso(r.started),
        e.mirror,
        r.run,
        r.result.as_str(),
        progress::human_secs(r.ended.saturating_sub(r.started)),
        r.trigger,
        r.requester,
        r.files,
        progress::human_bytes(r.bytes),
        r.deleted
    );
    if r.served > 1 {
        line.push_str(&format!(", served {}", r.served));
    }
    if !r.message.is_empty() {
        line.push_str(&format!(": {}", r.message.replace(['\n', '\r'], " ")));
    }
    line
}

/// `syncgate sudoers [--install]`.
fn cmd_sudoers(config: &Path, install: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    if install {
        sudoers::install(&cfg, Path::new(sudoers::INSTALL_PATH))?;
        progress::say(&format!(
            "installed {} (validated by visudo)",
            sudoers::INSTALL_PATH
        ));
    } else {
        out(&sudoers::render(&cfg)?);
    }
    Ok(())
}

/// `syncgate check`: the findings on stdout; any problem is exit 1.
fn cmd_check(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let report = check::check(&cfg);
    out(&report.render());
    match report.exit() {
        Exit::Ok => Ok(()),
        code => Err(Error::Reported(code)),
    }
}

/// `syncgate transfer MIRROR` and `syncgate prepare MIRROR` (owner side).
fn cmd_transfer(config: &Path, mirror: &str, stage: Stage, full: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let report = crate::owner::transfer(&cfg, mirror, stage, full)?;
    print_report(&report, report.ok)
}

/// `syncgate fix-perms MIRROR` (owner side).
fn cmd_fix_perms(config: &Path, mirror: &str) -> Result<()> {
    let cfg = Config::load(config)?;
    let report = crate::owner::fix_perms(&cfg, mirror)?;
    print_report(&report, report.ok)
}

/// `syncgate rollback MIRROR [--to ID]`: root only (with sudo privilege),
/// through the mirror's queue like a sync.
/// `syncgate push`: the downstream pushes of one mirror (root, the login
/// account, or a publish's detached pusher).
fn cmd_push(config: &Path, mirror: &str, detached: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    signals::install();
    let mut audit = Audit::open(&cfg.syslog);
    crate::hub::push_command(&cfg, mirror, detached, &mut audit)
}

fn cmd_rollback(config: &Path, mirror: &str, to: Option<&str>) -> Result<()> {
    let cfg = Config::load(config)?;
    if cfg.privilege == crate::config::Privilege::Sudo && !nix::unistd::geteuid().is_root() {
        return Err(Error::Usage(
            "rollback is for root: it changes what every reader sees".into(),
        ));
    }
    signals::install();
    let req = Requester::new(Trigger::Cli, who_am_i());
    let mut audit = Audit::open(&cfg.syslog);
    let mirrors = [mirror.to_string()];
    audit.record(&Request {
        req: &req,
        mirrors: &mirrors,
    });
    crate::runner::sync::rollback(&cfg, mirror, to, &req, &mut audit)
}
