//! `syncgate ssh --key NAME`: the SSH forced command.
//!
//! The key name comes from the admin-written `authorized_keys` line, never
//! from the client. The client's command (`SSH_ORIGINAL_COMMAND`) is checked
//! by the pure parser in [`crate::gate::request`] and the key's permissions in
//! [`crate::gate::policy`]; a decision line is written to the audit log *before*
//! anything runs. No client byte ever reaches an argv: accepted requests
//! only select among mirror names from the config.
//!
//! stdout carries only machine output (`status --json`); everything for
//! humans goes to stderr.

pub mod policy;
pub mod request;

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;

use crate::audit::{Audit, Level, Line};
use crate::config::{Config, KeyConfig};
use crate::error::{exit, Error, Result};
use crate::gate::policy::{Action, KeyPolicy};
use crate::gate::request::Refusal;
use crate::queue::state::Trigger;
use crate::queue::Requester;
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

fn decision_line(
    req: &Requester,
    key: &str,
    client: Option<(IpAddr, u16)>,
    raw: Option<&[u8]>,
) -> Line {
    let mut l = Line::new("decision");
    l.kv("request", &req.request).kv("key", key);
    match client {
        Some((ip, port)) => l.kv("client", ip).kv("port", port),
        None => l.kv("client", "-").kv("port", "-"),
    };
    l.kv(
        "command",
        match raw {
            Some(r) => request::escape_for_log(r, LOG_CAP),
            None => "(none)".into(),
        },
    );
    l
}

fn refuse(
    audit: &mut Audit,
    mut line: Line,
    refusal: &Refusal,
    pol: &KeyPolicy,
    help: Option<&str>,
) -> Result<u8> {
    line.kv("decision", "refuse").kv("reason", refusal.reason());
    audit.log(Level::Warning, &line);
    if let Some(h) = help {
        let _ = std::io::stderr().write_all(h.as_bytes());
    }
    if !matches!(refusal, Refusal::NoCommand) {
        if refusal.exit_code() == exit::USAGE {
            // Not understood: still say, on the same line, what this key may do.
            say(&format!(
                "refused: {refusal} ({})",
                policy::may_summary(pol)
            ));
        } else {
            say(&format!("refused: {refusal}"));
        }
    }
    Ok(refusal.exit_code())
}

/// Runs one SSH request. `config` is the path given on the forced command.
pub fn run(config: &std::path::Path, key: &str) -> Result<u8> {
    crate::sys::signals::install();
    let raw_os = std::env::var_os("SSH_ORIGINAL_COMMAND");
    let raw = raw_os.as_ref().map(|s| s.as_bytes());
    let conn = std::env::var_os("SSH_CONNECTION");
    let client = policy::client_from_ssh_connection(conn.as_ref().map(|s| s.as_bytes()));
    let who = match client {
        Some((ip, port)) => format!("key={key} client={ip}:{port}"),
        None => format!("key={key} client=-"),
    };
    let req = Requester::new(Trigger::Ssh, who);

    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            // Still leave a trace where syslog normally is.
            let mut audit = Audit::open_at("authpriv", std::path::Path::new("/dev/log"));
            let mut l = decision_line(&req, key, client, raw);
            l.kv("decision", "error")
                .kv("reason", "config")
                .kv("message", e.to_string());
            audit.log(Level::Error, &l);
            say("the mirror's configuration is broken; the administrator has been told (syslog)");
            return Err(Error::Silent(e.exit_code()));
        }
    };
    let mut audit = Audit::open(&cfg.syslog);
    let line = decision_line(&req, key, client, raw);

    let Some(kc) = cfg.keys.get(key) else {
        let mut line = line;
        line.kv("decision", "refuse").kv("reason", "unknown-key");
        audit.log(Level::Error, &line);
        say(&format!(
            "refused: key {key:?} is not configured on this mirror (ask its administrator)"
        ));
        return Ok(exit::NOT_PERMITTED);
    };
    let pol = key_policy(kc);

    let parsed = match request::parse(raw) {
        Ok(r) => r,
        Err(Refusal::NoCommand) => {
            return refuse(
                &mut audit,
                line,
                &Refusal::NoCommand,
                &pol,
                Some(&policy::help_text(&pol)),
            );
        }
        Err(r) => return refuse(&mut audit, line, &r, &pol, None),
    };
    let action = match policy::authorize(&parsed, &pol, client.map(|c| c.0)) {
        Ok(a) => a,
        Err(r) => return refuse(&mut audit, line, &r, &pol, None),
    };

    let mut line = line;
    line.kv("decision", "allow")
        .kv("reason", "ok")
        .kv("action", parsed.canonical());
    audit.log(Level::Notice, &line);

    match action {
        Action::Help => {
            let _ = std::io::stderr().write_all(policy::help_text(&pol).as_bytes());
            Ok(exit::OK)
        }
        Action::Status { mirror, json } => {
            let names = match mirror {
                Some(m) => vec![m],
                None => pol.mirrors.clone(),
            };
            let sd = crate::queue::statedir::StateDir::open(&cfg.state_dir)?;
            let doc = crate::admin::status::collect(&cfg, &sd, &names)?;
            if json {
                let mut s = serde_json::to_string_pretty(&doc).expect("status serializes");
                s.push('\n');
                let _ = std::io::stdout().write_all(s.as_bytes());
            } else {
                let _ = std::io::stderr().write_all(crate::admin::status::render(&doc).as_bytes());
            }
            Ok(exit::OK)
        }
        Action::Sync { mirrors } => {
            let mut extra = vec![("key", key.to_string())];
            if let Some((ip, port)) = client {
                extra.push(("client", format!("{ip}:{port}")));
            }
            crate::runner::sync::sync(&cfg, &mirrors, &req, &extra, &mut audit)
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
