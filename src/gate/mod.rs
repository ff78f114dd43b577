//! `syncgate ssh --key NAME`: the SSH forced command.
//!
//! The key name comes from the admin-written `authorized_keys` line, never
//! from the client. The client's command (`SSH_ORIGINAL_COMMAND`) is checked
//! by the pure parser in [`crate::gate::request`] and the key's permissions in
//! [`crate::gate::policy`]; a decision line is written to the audit log *before*
//! anything runs, and with `audit_required` a sync whose decision line could
//! not be recorded (neither syslog nor the fallback file) does not run. No client byte ever reaches an argv: accepted requests
//! only select among mirror names from the config.
//!
//! stdout carries only machine output (`status --json`); everything for
//! humans goes to stderr.

pub mod policy;
pub mod request;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use crate::admin::status::{self, TextTo};
use crate::audit::events::{Client, Decision, Verdict, Via};
use crate::audit::{Audit, Recorded};
use crate::config::{Config, KeyConfig};
use crate::error::{Error, Exit, Result};
use crate::gate::policy::{Action, KeyPolicy};
use crate::gate::request::Refusal;
use crate::run::{Requester, Trigger};
use crate::sys::progress::say;

/// How much of the client's command the audit line keeps.
const LOG_CAP: usize = 160;

pub fn key_policy(k: &KeyConfig) -> KeyPolicy {
    KeyPolicy {
        key: k.name.clone(),
        verbs: k.verbs.clone(),
        mirrors: k.mirrors.clone(),
        from: k.from.clone(),
    }
}

/// What the decision line says about the request itself.
struct Asked<'a> {
    req: &'a Requester,
    key: &'a str,
    client: Client,
    /// The client's command, escaped and capped for the log.
    command: Option<String>,
}

impl Asked<'_> {
    fn decision<'v>(&'v self, verdict: Verdict<'v>) -> Decision<'v> {
        Decision {
            request: &self.req.request,
            key: self.key,
            client: self.client,
            command: self.command.as_deref(),
            verdict,
        }
    }
}

/// Logs the refusal, tells the client, and returns the refusal as an error.
fn refuse(
    audit: &mut Audit,
    asked: &Asked,
    refusal: &Refusal,
    pol: &KeyPolicy,
    help: Option<&str>,
) -> Error {
    audit.record(&asked.decision(Verdict::Refuse {
        reason: refusal.reason(),
    }));
    if let Some(h) = help {
        let _ = std::io::stderr().write_all(h.as_bytes());
    }
    let not_understood = refusal.exit_code() == Exit::Usage.code();
    if !matches!(refusal, Refusal::NoCommand) {
        if not_understood {
            // Not understood: still say, on the same line, what this key may do.
            say(&format!(
                "refused: {refusal} ({})",
                policy::may_summary(pol)
            ));
        } else {
            say(&format!("refused: {refusal}"));
        }
    }
    Error::Refused(if not_understood {
        Exit::Usage
    } else {
        Exit::NotPermitted
    })
}

/// Runs one SSH request. `config` is the path given on the forced command.
pub fn run(config: &std::path::Path, key: &str) -> Result<()> {
    let mut runmirrors = false;
    match serve(config, key, &mut runmirrors) {
        // Debian's runmirrors takes every status but ssh's 255 for success.
        Err(e) if runmirrors && e.exit() != Exit::Ok => {
            if !e.is_reported() {
                say(&e.to_string());
            }
            say("exit 255: this key is runmirrors' (runmirrors = true), which notices no other status");
            Err(Error::Reported(Exit::PushFailed))
        }
        r => r,
    }
}

/// Serves one SSH request; `runmirrors` is set from the key's config.
fn serve(config: &std::path::Path, key: &str, runmirrors: &mut bool) -> Result<()> {
    crate::sys::signals::install();
    let raw_os = std::env::var_os("SSH_ORIGINAL_COMMAND");
    let raw = raw_os.as_ref().map(|s| s.as_bytes());
    let conn = std::env::var_os("SSH_CONNECTION");
    let client = policy::client_from_ssh_connection(conn.as_ref().map(|s| s.as_bytes()));
    let who = match client {
        Some((ip, port)) => format!("key={key} client={ip}:{port}"),
        None => format!("key={key} client=-"),
    };
    let mut req = Requester::new(Trigger::Ssh, who);
    let asked = Asked {
        req: &req,
        key,
        client,
        command: raw.map(|r| request::escape_for_log(r, LOG_CAP)),
    };

    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            // Still leave a trace where syslog normally is.
            let mut audit = Audit::open_at("authpriv", std::path::Path::new("/dev/log"));
            audit.record(&asked.decision(Verdict::ConfigError {
                message: &e.to_string(),
            }));
            say("the mirror's configuration is broken; the administrator has been told (syslog)");
            return Err(Error::Reported(e.exit()));
        }
    };
    let mut audit = Audit::open(&cfg.syslog);

    let Some(kc) = cfg.keys.get(key) else {
        audit.record(&asked.decision(Verdict::UnknownKey));
        say(&format!(
            "refused: key {key:?} is not configured on this mirror (ask its administrator)"
        ));
        return Err(Error::Refused(Exit::NotPermitted));
    };
    *runmirrors = kc.runmirrors;
    let pol = key_policy(kc);

    let parsed = match request::parse(raw) {
        Ok(r) => r,
        Err(Refusal::NoCommand) => {
            let help = policy::help_text(&pol);
            return Err(refuse(
                &mut audit,
                &asked,
                &Refusal::NoCommand,
                &pol,
                Some(&help),
            ));
        }
        Err(r) => return Err(refuse(&mut audit, &asked, &r, &pol, None)),
    };
    if matches!(parsed, request::Request::Sync { push: Some(_), .. }) {
        note_push(&cfg.state_dir, key);
    }
    let mhop = matches!(&parsed, request::Request::Sync { push: Some(p), .. } if p.mhop);
    let action = policy::authorize(&parsed, &pol, client.map(|c| c.0))
        .map_err(|r| refuse(&mut audit, &asked, &r, &pol, None))?;
    let recorded = audit.record(&asked.decision(Verdict::Allow {
        action: &parsed.canonical(),
    }));
    if cfg.audit_required && recorded == Recorded::Nowhere && matches!(action, Action::Sync { .. })
    {
        return Err(Error::Internal(format!(
            "refused: this sync could not be audited ({}), and audit_required is set; ask the mirror's administrator",
            audit.trouble()
        )));
    }

    match action {
        Action::Help => {
            let _ = std::io::stderr().write_all(policy::help_text(&pol).as_bytes());
            Ok(())
        }
        Action::Status { mirror, json } => {
            let names = match mirror {
                Some(m) => vec![m],
                None => pol.mirrors.clone(),
            };
            status::show(&cfg, &names, json, TextTo::Stderr)
        }
        Action::Sync { mirrors, stage } => {
            // The stage travels with the requester to the queue.
            req.stage = stage;
            req.mhop = mhop;
            let via = Via { key, client };
            crate::runner::sync::sync(&cfg, &mirrors, &req, Some(via), &mut audit)
        }
    }
}

/// `syncgate authorized-key`: one `authorized_keys` line for a key.
pub fn authorized_key_line(
    binary: &std::path::Path,
    config: Option<&std::path::Path>,
    key: &str,
    from: &[policy::Cidr],
    pubkey: &str,
) -> Result<String> {
    if !crate::config::valid_name(key) {
        return Err(Error::Usage(format!(
            "key name {key:?}: use lowercase letters, digits, '.', '_' and '-'"
        )));
    }
    let line = pubkey
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(line) = line else {
        return Err(Error::Usage("the public key file is empty".into()));
    };
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(Error::Usage(
            "not a public key line (expected: TYPE BASE64 [COMMENT])".into(),
        ));
    };
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !TYPES.contains(&kind) {
        return Err(Error::Usage(format!(
            "unsupported key type {:?} (a key line with options already in front is not accepted either)",
            request::escape_for_log(kind.as_bytes(), 40)
        )));
    }
    if blob.is_empty()
        || !blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    {
        return Err(Error::Usage("the key's base64 part is malformed".into()));
    }
    let comment: String = parts
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect();
    let mut command = format!("{} ", binary.display());
    if let Some(c) = config {
        command.push_str(&format!("--config {} ", c.display()));
    }
    command.push_str(&format!("ssh --key {key}"));
    let mut opts = vec!["restrict".to_string()];
    if !from.is_empty() {
        let list: Vec<String> = from.iter().map(|c| c.to_string()).collect();
        opts.push(format!("from=\"{}\"", list.join(",")));
    }
    opts.push(format!("command=\"{command}\""));
    let mut out = format!("{} {kind} {blob}", opts.join(","));
    if !comment.is_empty() {
        out.push(' ');
        out.push_str(&comment);
    }
    Ok(out)
}

/// Notes that `key` sent a push (Debian's push words), once: `check` then
/// warns if runmirrors cannot see this key's failures.
fn note_push(state_dir: &std::path::Path, key: &str) {
    let path = crate::queue::statedir::push_marker(state_dir, key);
    if std::fs::symlink_metadata(&path).is_err() {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorized_keys_line_binds_the_key_to_the_gate() {
        let from = vec!["192.0.2.0/24".parse().unwrap()];
        let line = authorized_key_line(
            std::path::Path::new("/usr/bin/syncgate"),
            None,
            "jenkins",
            &from,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9 jenkins@ci\n",
        )
        .unwrap();
        assert_eq!(
            line,
            "restrict,from=\"192.0.2.0/24\",command=\"/usr/bin/syncgate ssh --key jenkins\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9 jenkins@ci"
        );
    }

    #[test]
    fn a_key_line_that_already_has_options_is_refused() {
        let r = authorized_key_line(
            std::path::Path::new("/usr/bin/syncgate"),
            None,
            "jenkins",
            &[],
            "command=\"/bin/sh\" ssh-ed25519 AAAA x",
        );
        assert!(r.is_err());
    }
}
