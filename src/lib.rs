//! syncgate: a queued, coalescing, privilege-separated mirror sync.
//!
//! `main` calls [`run`]; every error carries its exit code (see
//! [`error::exit`]).

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod error;
pub mod gate;
pub mod owner;
pub mod queue;
pub mod runner;
pub mod sys;

use std::process::ExitCode;

use clap::Parser;

use crate::admin::{check, status, sudoers};
use crate::cli::generate;
use crate::cli::{Cli, CliTrigger, Command};
use crate::config::Config;
use crate::error::{exit, Error, Result};
use crate::gate::policy;
use crate::queue::state::Trigger;
use crate::queue::statedir;
use crate::runner::sync;
use crate::sys::{progress, signals};

/// Parses the command line, runs it, and turns the result into an exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Error::Silent(code)) => ExitCode::from(code),
        Err(e) => {
            progress::say(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

/// The owner side's one JSON line for the gate. If the gate is already gone
/// there is nobody to tell; that is not an error of the work just done.
fn print_report<T: serde::Serialize>(report: &T) {
    let mut line = serde_json::to_string(report).expect("report serializes");
    line.push('\n');
    out(&line);
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
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

fn dispatch(cli: Cli) -> Result<u8> {
    match &cli.command {
        Command::Ssh { key } => gate::run(cli.config_path(), key),
        Command::Generate { what } => generate::run(*what),
        Command::AuthorizedKey {
            key,
            from,
            pubkey_file,
        } => {
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
                gate::authorized_key_line(&binary, cli.config.as_deref(), key, &nets, &pubkey)?;
            out(&format!("{line}\n"));
            Ok(exit::OK)
        }
        Command::Sync {
            mirrors,
            all,
            trigger,
        } => {
            let cfg = Config::load(cli.config_path())?;
            signals::install();
            let mirrors = if *all {
                cfg.mirror_names()
            } else {
                mirrors.clone()
            };
            let trigger = match trigger {
                CliTrigger::Cli => Trigger::Cli,
                CliTrigger::Timer => Trigger::Timer,
            };
            let who = who_am_i();
            let req = queue::Requester::new(trigger, who.clone());
            let mut audit = audit::Audit::open(&cfg.syslog);
            let mut l = audit::Line::new("request");
            l.kv("request", &req.request)
                .kv("trigger", trigger)
                .kv("from", &who)
                .kv("command", format!("sync {}", mirrors.join(" ")))
                .kv("decision", "allow")
                .kv("reason", "local");
            audit.log(audit::Level::Notice, &l);
            sync::sync(&cfg, &mirrors, &req, &[], &mut audit)
        }
        Command::Status { mirror, json } => {
            let cfg = Config::load(cli.config_path())?;
            let names = match mirror {
                Some(m) => vec![cfg.mirror(m)?.name.clone()],
                None => cfg.mirror_names(),
            };
            let sd = statedir::StateDir::open(&cfg.state_dir)?;
            let doc = status::collect(&cfg, &sd, &names)?;
            let out = if *json {
                let mut s = serde_json::to_string_pretty(&doc).expect("status serializes");
                s.push('\n');
                s
            } else {
                status::render(&doc)
            };
            use std::io::Write;
            let _ = std::io::stdout().write_all(out.as_bytes());
            Ok(exit::OK)
        }
        Command::Sudoers { install } => {
            let cfg = Config::load(cli.config_path())?;
            if *install {
                sudoers::install(&cfg, std::path::Path::new(sudoers::INSTALL_PATH))?;
                progress::say(&format!(
                    "installed {} (validated by visudo)",
                    sudoers::INSTALL_PATH
                ));
            } else {
                out(&sudoers::render(&cfg)?);
            }
            Ok(exit::OK)
        }
        Command::Check => {
            let cfg = Config::load(cli.config_path())?;
            let report = check::check(&cfg);
            out(&report.render());
            Ok(report.exit_code())
        }
        Command::Transfer { mirror } => {
            let cfg = Config::load(cli.config_path())?;
            let report = owner::transfer(&cfg, mirror)?;
            print_report(&report);
            Ok(if report.ok {
                exit::OK
            } else {
                exit::SYNC_FAILED
            })
        }
        Command::FixPerms { mirror } => {
            let cfg = Config::load(cli.config_path())?;
            let report = owner::fix_perms(&cfg, mirror)?;
            print_report(&report);
            Ok(if report.ok {
                exit::OK
            } else {
                exit::SYNC_FAILED
            })
        }
    }
}
