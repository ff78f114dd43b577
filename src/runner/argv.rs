//! The one source of truth for every command line syncgate runs.
//!
//! The same functions drive execution, the generated sudoers rule
//! (`syncgate sudoers`) and the verification in `syncgate check`, so the three
//! cannot disagree.
//!
//! The privileged boundary is deliberately narrow: the login account may run
//! only `syncgate --config CONFIG transfer MIRROR`,
//! `syncgate --config CONFIG transfer --full MIRROR` (the same, walking the
//! trees whatever the change marker says),
//! `syncgate --config CONFIG prepare MIRROR` (a push's stage 1: a subset of
//! transfer) and `syncgate --config CONFIG fix-perms MIRROR` as the mirror's
//! owner. Those
//! take nothing but a mirror name and read everything else (upstream, dest,
//! modes, excludes) from the root-owned config, so no argument the caller
//! controls reaches rsync, and no other split of the space-joined string
//! sudo compares can mean anything else.

use crate::config::{Config, Mirror, Privilege};

pub const SUDO: &str = "/usr/bin/sudo";

/// The owner-side commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerVerb {
    Transfer,
    /// `transfer --full`: a walk even when the change marker is unchanged.
    TransferFull,
    /// Stage 1 of a push: everything but publishing.
    Prepare,
    FixPerms,
}

impl OwnerVerb {
    pub const ALL: [OwnerVerb; 4] = [
        OwnerVerb::Transfer,
        OwnerVerb::TransferFull,
        OwnerVerb::Prepare,
        OwnerVerb::FixPerms,
    ];

    /// The subcommand (for `--full`, its option follows: [`owner_command`]).
    pub fn as_str(&self) -> &'static str {
        match self {
            OwnerVerb::Transfer | OwnerVerb::TransferFull => "transfer",
            OwnerVerb::Prepare => "prepare",
            OwnerVerb::FixPerms => "fix-perms",
        }
    }
}

/// The owner-side command line, exactly as the sudoers rule grants it.
pub fn owner_command(cfg: &Config, mirror: &Mirror, verb: OwnerVerb) -> Vec<String> {
    let mut v: Vec<String> = vec![
        cfg.binary.display().to_string(),
        "--config".into(),
        cfg.path.display().to_string(),
        verb.as_str().into(),
    ];
    if verb == OwnerVerb::TransferFull {
        v.push("--full".into());
    }
    v.push(mirror.name.clone());
    v
}

/// The owner side of `syncgate rollback`. Not an [`OwnerVerb`]: the sudoers
/// rule never grants it; root runs it as the owner (`sudo -u OWNER`, which
/// root may always do) or, with `privilege = "direct"`, runs it as itself.
pub const OWNER_ROLLBACK: &str = "owner-rollback";

/// What `syncgate rollback` executes.
pub fn launch_rollback(cfg: &Config, mirror: &Mirror, to: Option<&str>) -> Vec<String> {
    let mut v = launch(cfg, mirror, OwnerVerb::Transfer);
    let n = v.len();
    v[n - 2] = OWNER_ROLLBACK.into();
    if let Some(id) = to {
        v.push("--to".into());
        v.push(id.into());
    }
    v
}

/// What the gate executes to run an owner-side command.
pub fn launch(cfg: &Config, mirror: &Mirror, verb: OwnerVerb) -> Vec<String> {
    let inner = owner_command(cfg, mirror, verb);
    match cfg.privilege {
        Privilege::Direct => inner,
        Privilege::Sudo => {
            let mut v: Vec<String> = vec![
                SUDO.into(),
                "-n".into(),
                "-u".into(),
                mirror.owner.clone(),
                "--".into(),
            ];
            v.extend(inner);
            v
        }
    }
}

/// Renders an argv for humans and logs (shell-quoted).
pub fn render(argv: &[String]) -> String {
    shell_words::join(argv)
}
