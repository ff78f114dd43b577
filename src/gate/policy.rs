//! Authorization: may this key make this [`Request`] from this address?
//!
//! Pure functions over a [`KeyPolicy`] (one per SSH key, from the
//! configuration) and the client address from `SSH_CONNECTION`.
//!
//! Rules, in the order they are checked:
//!
//! 1. `help` is always allowed.
//! 2. If the key's `from` list is non-empty, the client address must be in
//!    one of its networks. A missing or unparsable address is refused.
//! 3. The verb must be in the key's `verbs`.
//! 4. Mirrors: a named mirror must be one of the key's `mirrors` (an unknown
//!    mirror is refused exactly like a forbidden one, so clients cannot probe
//!    which mirrors exist). `sync` without a name (and a push without an
//!    archive word or with an empty one, `sync:archive:`) means the key's
//!    only mirror and is ambiguous if it has several; `sync:all` without an
//!    archive word and `status` without a name mean all of the key's
//!    mirrors. A key without mirrors can only run `help`. Every form of
//!    sync, push words included, needs the `sync` verb; the stage asked
//!    for is passed through in [`Action::Sync`] unchanged.
//!
//! Refusals here exit 77 and their message says what the key may do.
//! [`help_text`] lists exactly the commands that [`authorize`] permits.
//!
//! Mirror names in a policy are valid [`crate::config::MirrorName`]s (the
//! configuration loader checks them); this module only compares them.

use std::net::IpAddr;

pub use crate::config::{Cidr, CidrError, Verb};
use crate::gate::request::{escape_for_log, Name, Refusal, Request, Target};
use crate::run::Stage;

/// The permissions of one SSH key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The key's name (the `--key NAME` of the forced command).
    pub key: String,
    /// Verbs the key may use. `help` is allowed whether listed or not.
    pub verbs: Vec<Verb>,
    /// Mirrors the key may sync and see.
    pub mirrors: Vec<String>,
    /// Networks the key may be used from; empty means anywhere.
    pub from: Vec<Cidr>,
}

/// What the caller should do once a request is authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Queue syncs of these mirrors (non-empty, no duplicates, policy order),
    /// each asking for `stage`.
    Sync {
        mirrors: Vec<String>,
        stage: Stage,
    },
    /// Show status of `mirror`, or of every mirror of the key when `None`.
    Status {
        mirror: Option<String>,
        json: bool,
    },
    Help,
}

/// The client address and port from `SSH_CONNECTION`
/// (`"client_ip client_port server_ip server_port"`, single spaces).
/// Anything malformed, including port 0, gives `None`.
pub fn client_from_ssh_connection(v: Option<&[u8]>) -> Option<(IpAddr, u16)> {
    let fields: Vec<&str> = std::str::from_utf8(v?).ok()?.split(' ').collect();
    let [client_ip, client_port, server_ip, server_port] = fields.as_slice() else {
        return None;
    };
    fn port(s: &str) -> Option<u16> {
        let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        s.parse().ok().filter(|&p| digits && p != 0)
    }
    server_ip.parse::<IpAddr>().ok()?;
    port(server_port)?;
    Some((client_ip.parse().ok()?, port(client_port)?))
}

/// Decides whether `policy` allows `req` from `client`; see the module docs.
pub fn authorize(
    req: &Request,
    policy: &KeyPolicy,
    client: Option<IpAddr>,
) -> Result<Action, Refusal> {
    let verb = match req {
        Request::Help => return Ok(Action::Help),
        Request::Sync { .. } => Verb::Sync,
        Request::Status { .. } => Verb::Status,
    };
    if !policy.from.is_empty()
        && !client.is_some_and(|ip| policy.from.iter().any(|net| net.contains(ip)))
    {
        return Err(Refusal::NetworkNotAllowed {
            key: esc(&policy.key),
            client,
        });
    }
    if !policy.verbs.contains(&verb) {
        return Err(Refusal::VerbNotAllowed {
            verb: verb.as_str(),
            may: may_summary(policy),
        });
    }
    let mirrors = key_mirrors(policy);
    let refuse = |mirror: Option<&Name>| Refusal::MirrorNotAllowed {
        verb: verb.as_str(),
        mirror: mirror.map(|n| n.as_str().to_owned()),
        may: may_summary(policy),
    };
    let allowed = |n: &Name| {
        mirrors
            .contains(&n.as_str())
            .then(|| n.as_str().to_owned())
            .ok_or_else(|| refuse(Some(n)))
    };
    if mirrors.is_empty() {
        return Err(refuse(None));
    }
    match req {
        Request::Sync { target, stage, .. } => {
            let mirrors = match target {
                Target::Named(n) => vec![allowed(n)?],
                Target::All => owned(&mirrors),
                Target::Default if mirrors.len() == 1 => owned(&mirrors),
                Target::Default => {
                    return Err(Refusal::AmbiguousMirror {
                        key: esc(&policy.key),
                        mirrors: mirrors.iter().map(|m| esc(m)).collect(),
                    })
                }
            };
            Ok(Action::Sync {
                mirrors,
                stage: *stage,
            })
        }
        Request::Status { mirror, json } => Ok(Action::Status {
            mirror: mirror.as_ref().map(allowed).transpose()?,
            json: *json,
        }),
        Request::Help => Ok(Action::Help),
    }
}

/// Usage text for this key: exactly the commands it may run.
pub fn help_text(policy: &KeyPolicy) -> String {
    let mirrors = key_mirrors(policy);
    let may = |v| policy.verbs.contains(&v) && !mirrors.is_empty();
    let mut lines: Vec<(&str, String)> = Vec::new();
    let list = mirrors
        .iter()
        .map(|m| esc(m))
        .collect::<Vec<_>>()
        .join(", ");
    if may(Verb::Sync) {
        if mirrors.len() == 1 {
            lines.push(("sync", format!("sync {list}")));
        }
        lines.push(("sync MIRROR", "sync one mirror".into()));
        lines.push(("sync:all", "sync all your mirrors".into()));
        lines.push(("sync:archive:MIRROR", "ftpsync push: sync MIRROR".into()));
        if mirrors.len() == 1 {
            lines.push(("sync:archive:", format!("ftpsync push: sync {list}")));
            lines.push(("sync:stage1", format!("ftpsync push: stage 1 of {list}")));
            lines.push(("sync:stage2", format!("ftpsync push: stage 2 of {list}")));
        }
    }
    if may(Verb::Status) {
        lines.push((
            "status [MIRROR] [--json]",
            "show sync state (default: all your mirrors)".into(),
        ));
    }
    lines.push(("help", "show this text".into()));

    let mut out = format!("syncgate: commands for key '{}':\n", esc(&policy.key));
    for (usage, what) in lines {
        out.push_str(&format!("  {usage:<26}{what}\n"));
    }
    if may(Verb::Sync) {
        out.push_str(PUSH_NOTE);
    }
    if !mirrors.is_empty() {
        out.push_str(&format!("MIRROR is one of: {list}\n"));
    }
    out
}

/// How push words combine, after the command lines of a key that may sync.
const PUSH_NOTE: &str = "ftpsync push words combine in any order, each at most once: \
sync:archive:MIRROR (or sync:archive: for the key's only mirror), at most one of \
sync:all, sync:stage1, sync:stage2, and sync:mhop, sync:callback (accepted; \
syncgate never calls back). Other words are refused.\n";

/// One line saying what the key may do, e.g.
/// `key 'jenkins' may: sync debian-cd, status debian-cd, help`.
pub fn may_summary(policy: &KeyPolicy) -> String {
    let mirrors = key_mirrors(policy);
    let list = match mirrors.as_slice() {
        [one] => esc(one),
        many => format!(
            "{{{}}}",
            many.iter().map(|m| esc(m)).collect::<Vec<_>>().join(",")
        ),
    };
    let mut parts: Vec<String> = [Verb::Sync, Verb::Status]
        .into_iter()
        .filter(|v| policy.verbs.contains(v) && !mirrors.is_empty())
        .map(|v| format!("{} {list}", v.as_str()))
        .collect();
    parts.push("help".into());
    format!("key '{}' may: {}", esc(&policy.key), parts.join(", "))
}

/// The key's mirrors without duplicates, in policy order.
fn key_mirrors(policy: &KeyPolicy) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for m in &policy.mirrors {
        if !out.contains(&m.as_str()) {
            out.push(m);
        }
    }
    out
}

fn owned(mirrors: &[&str]) -> Vec<String> {
    mirrors.iter().map(|m| m.to_string()).collect()
}

/// Policy text is trusted, but is escaped like client text anyway so that
/// messages stay one printable line.
fn esc(s: &str) -> String {
    escape_for_log(s.as_bytes(), 128)
}

#[cfg(test)]
mod tests;
