//! syncgate: a queued, coalescing, privilege-separated mirror sync.
//!
//! `main` calls [`run`]: the command line is parsed, the command runs
//! ([`cli::commands`]), and its error, if any, becomes the exit status
//! ([`error::Exit`]).

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod error;
pub mod gate;
pub mod hub;
pub mod observe;
pub mod owner;
pub mod queue;
pub mod run;
pub mod runner;
pub mod sys;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::Exit;

/// Parses the command line, runs it, and turns the result into an exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    // The one command whose exit status is not syncgate's own: a
    // monitoring plugin's (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    if let cli::Command::Status {
        mirror,
        check: true,
        ..
    } = &cli.command
    {
        return ExitCode::from(admin::status::check(cli.config_path(), mirror.as_deref()).code());
    }
    match cli::commands::dispatch(&cli) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            if !e.is_reported() {
                sys::progress::say(&e.to_string());
            }
            e.exit().into()
        }
    }
}
