//! The command line, defined once: `--help`, the man page and the shell
//! completions are all generated from this.

pub mod commands;
pub mod generate;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "syncgate",
    version,
    about = "Queued, coalescing, privilege-separated mirror sync behind an SSH forced command",
    after_help = crate::error::Exit::help_text()
)]
pub struct Cli {
    /// Configuration file [default: /etc/syncgate/syncgate.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliTrigger {
    Cli,
    Timer,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync mirrors now, through the queue: wait for a run that started after
    /// this request and report its result.
    Sync {
        /// Mirrors to sync.
        #[arg(
            value_name = "MIRROR",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        mirrors: Vec<String>,
        /// Sync every configured mirror.
        #[arg(long)]
        all: bool,
        /// Recorded in state and the audit log (the systemd timer passes `timer`).
        #[arg(long, value_enum, default_value = "cli")]
        trigger: CliTrigger,
        /// Walk both trees even when upstream's change marker says nothing
        /// changed (repairs a tree changed behind syncgate's back); served
        /// only by a run that walks.
        #[arg(long)]
        full: bool,
    },
    /// Show each mirror: idle or running, waiting requests, last run, last
    /// success, freshness (max_age), failures in a row, typical duration.
    Status {
        /// Only this mirror.
        mirror: Option<String>,
        /// Machine-readable output (stable; see README "Monitoring").
        #[arg(long, conflicts_with = "check")]
        json: bool,
        /// Nagios/Icinga plugin: one line with perfdata; exits 0 OK,
        /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN (not syncgate's exit codes).
        #[arg(long)]
        check: bool,
    },
    /// Show the mirrors' finished runs, newest last (from
    /// STATE_DIR/MIRROR.history.jsonl).
    History {
        /// Only this mirror.
        mirror: Option<String>,
        /// One JSON object per line, as stored (stable; see README "Monitoring").
        #[arg(long)]
        json: bool,
        /// The last N runs (0: all that are kept).
        #[arg(short = 'n', value_name = "N", default_value_t = 20)]
        n: usize,
    },
    /// The SSH forced command: serve SSH_ORIGINAL_COMMAND for key NAME.
    ///
    /// SSH verbs: `sync [MIRROR]`, Debian push words (`sync:archive:[MIRROR]`,
    /// `sync:all`, `sync:stage1`, `sync:stage2`, `sync:mhop`, `sync:callback`,
    /// in any order), `status [MIRROR] [--json]`, `help`.
    Ssh {
        /// The key's name, from the admin-written authorized_keys line.
        #[arg(long, value_name = "NAME")]
        key: String,
    },
    /// Print an authorized_keys line that binds PUBKEY_FILE to the gate.
    AuthorizedKey {
        /// The key's name: selects [key.NAME] in the config.
        #[arg(long, value_name = "NAME")]
        key: String,
        /// Client networks allowed to use the key (repeatable).
        #[arg(long, value_name = "CIDR")]
        from: Vec<String>,
        /// The client's public key file (e.g. id_ed25519.pub).
        pubkey_file: PathBuf,
    },
    /// Print the sudoers.d rule for this config; --install validates it with
    /// visudo and installs it as /etc/sudoers.d/syncgate (mode 0440).
    Sudoers {
        /// Validate with visudo and install instead of printing.
        #[arg(long)]
        install: bool,
    },
    /// Diagnose accounts, sudo rules, directories and programs; one line per
    /// finding, each problem with a fix. Exits 1 if anything is wrong.
    Check,
    /// Owner side: bring MIRROR up to date with rsync (run by the gate, through sudo).
    Transfer {
        /// Walk both trees even when upstream's change marker is unchanged.
        #[arg(long)]
        full: bool,
        /// A mirror name from the config.
        mirror: String,
    },
    /// Owner side: stage 1 of a push (everything but publishing; run by the
    /// gate, through sudo).
    Prepare {
        /// A mirror name from the config.
        mirror: String,
    },
    /// Owner side: enforce owner, reader group and modes on MIRROR's tree.
    FixPerms {
        /// A mirror name from the config.
        mirror: String,
    },
    /// Make the previous snapshot of MIRROR live again (root; through the
    /// mirror's queue, recorded as a run and audited).
    Rollback {
        /// A mirror name from the config (publish = "snapshot").
        mirror: String,
        /// This snapshot instead of the one before the live one.
        #[arg(long, value_name = "ID")]
        to: Option<String>,
    },
    /// Push MIRROR's release to every downstream mirror now (what a publish
    /// does; see README "Hub"). Exits 2 unless every downstream got it.
    Push {
        /// A mirror name from the config, with downstreams.
        mirror: String,
        /// What a publish with cascade = "detach" starts: push only the
        /// downstreams that lack the newest release, unless a pusher is
        /// already waiting (it will).
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Owner side of `rollback` (run by it as the image owner; not in the
    /// sudoers rule).
    #[command(hide = true)]
    OwnerRollback {
        mirror: String,
        #[arg(long, value_name = "ID")]
        to: Option<String>,
    },
    /// Print the man page or a shell completion script (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: GenerateWhat,
    },
}

/// What `syncgate generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateWhat {
    /// syncgate(1) in roff.
    Man,
    CompleteBash,
    CompleteZsh,
    CompleteFish,
}

impl Cli {
    pub fn config_path(&self) -> &Path {
        self.config
            .as_deref()
            .unwrap_or(Path::new(crate::config::DEFAULT_PATH))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_config_knows_every_subcommand_name() {
        let mut names: Vec<String> = super::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        names.push("help".into());
        let mut known: Vec<String> = crate::config::SUBCOMMANDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.sort();
        known.sort();
        assert_eq!(
            names, known,
            "config::SUBCOMMANDS must list clap's subcommands"
        );
    }
}
