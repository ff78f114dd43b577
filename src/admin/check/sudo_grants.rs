//! What sudo lets the login account do, compared with what syncgate needs.
//!
//! `syncgate check` asks sudo itself (`sudo -n -ll`, as the login account,
//! one entry per rule and one command per line) and compares every grant
//! with the rule `syncgate sudoers` generates: each entry must run as a
//! mirror's owner, carry `NOPASSWD` and no `SETENV`, and list only that
//! owner's owner-side command lines. The matching Defaults must keep the
//! environment reset: `!env_reset`, `setenv` or an `env_keep` addition would
//! let the login account carry `LD_PRELOAD` or the like into the owner side.
//! Anything else is a grant syncgate did not make, and a problem.

use std::collections::BTreeMap;

/// One `Sudoers entry:` of `sudo -ll`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entry {
    pub run_as_users: Vec<String>,
    pub run_as_groups: Vec<String>,
    pub options: Vec<String>,
    pub commands: Vec<String>,
}

/// `sudo -ll`'s listing: the matching Defaults in order, and the entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    pub defaults: Vec<String>,
    pub entries: Vec<Entry>,
}

/// Splits a Defaults line at commas outside double quotes.
fn split_defaults(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out.retain(|s| !s.is_empty());
    out
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads the output of `sudo -n -ll` (run with a wide `COLUMNS`, so that no
/// line is wrapped).
pub fn parse(text: &str) -> Listing {
    let mut l = Listing::default();
    let mut in_defaults = false;
    let mut in_commands = false;
    for line in text.lines() {
        let t = line.trim();
        if line.starts_with("Matching Defaults entries") {
            in_defaults = true;
            continue;
        }
        if line.starts_with("Sudoers entry") {
            in_defaults = false;
            in_commands = false;
            l.entries.push(Entry::default());
            continue;
        }
        if line.starts_with("User ") || line.starts_with("Runas and Command-specific defaults") {
            in_defaults = false;
            in_commands = false;
            continue;
        }
        if t.is_empty() {
            in_defaults = false;
            continue;
        }
        if in_defaults {
            l.defaults.extend(split_defaults(t));
            continue;
        }
        let Some(e) = l.entries.last_mut() else {
            continue;
        };
        if let Some(v) = t.strip_prefix("RunAsUsers:") {
            e.run_as_users = list(v);
            in_commands = false;
        } else if let Some(v) = t.strip_prefix("RunAsGroups:") {
            e.run_as_groups = list(v);
            in_commands = false;
        } else if let Some(v) = t.strip_prefix("Options:") {
            e.options = list(v);
            in_commands = false;
        } else if t == "Commands:" {
            in_commands = true;
        } else if in_commands {
            e.commands.push(t.to_string());
        } else {
            // Some other attribute (a role, a time limit, a cwd): not ours.
            e.options.push(t.to_string());
        }
    }
    l
}

/// Everything in `listing` that the generated rule does not grant.
/// `wanted` maps each run-as user to the command lines syncgate needs it to
/// run (space-joined, as sudo compares and prints them).
pub fn problems(listing: &Listing, wanted: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = defaults_problems(&listing.defaults);
    for e in &listing.entries {
        let who = if e.run_as_users.is_empty() {
            "root".to_string()
        } else {
            e.run_as_users.join(",")
        };
        let cmds = e.commands.join(", ");
        if !e.run_as_groups.is_empty() {
            out.push(format!(
                "a rule lets it run commands with group(s) {} ({cmds})",
                e.run_as_groups.join(",")
            ));
        }
        let allowed = match (e.run_as_users.as_slice(), wanted.get(&who)) {
            ([_], Some(allowed)) => allowed,
            _ => {
                out.push(format!("a rule lets it run {cmds} as {who}"));
                continue;
            }
        };
        for c in &e.commands {
            if !allowed.contains(c) {
                out.push(format!("a rule lets it run {c} as {who}"));
            }
        }
        if e.options.iter().any(|o| o == "setenv") {
            out.push(format!(
                "the rule for {who} carries SETENV: the caller could set LD_PRELOAD for {cmds}"
            ));
        }
        if !e.options.iter().any(|o| o == "!authenticate") {
            out.push(format!(
                "the rule for {who} has no NOPASSWD: the gate runs sudo -n and every sync would fail"
            ));
        }
        for o in &e.options {
            if o != "setenv" && o != "!authenticate" {
                out.push(format!(
                    "the rule for {who} carries option {o:?}, which syncgate's rule does not"
                ));
            }
        }
    }
    out
}

/// The Defaults that let the caller's environment into the owner side.
fn defaults_problems(defaults: &[String]) -> Vec<String> {
    let mut env_reset = true;
    let mut setenv = false;
    let mut keep: Vec<String> = Vec::new();
    for d in defaults {
        let (name, value) = match d.split_once(['=', '+', '-']) {
            Some(_) => {
                let i = d.find(['=', '+', '-']).expect("found");
                (&d[..i], &d[i..])
            }
            None => (d.as_str(), ""),
        };
        match (name, value) {
            ("env_reset", "") => env_reset = true,
            ("!env_reset", "") => env_reset = false,
            ("setenv", "") => setenv = true,
            ("!setenv", "") => setenv = false,
            ("env_keep", v) if v.starts_with("+=") || v.starts_with('=') => {
                keep.push(d.clone());
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if !env_reset {
        out.push("Defaults !env_reset: the caller's environment reaches the owner side".into());
    }
    if setenv {
        out.push("Defaults setenv: the caller may set any variable, LD_PRELOAD included".into());
    }
    for k in keep {
        out.push(format!(
            "Defaults {k}: these variables reach the owner side from the caller"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "Matching Defaults entries for sg1 on vm:
    env_reset, mail_badpass, secure_path=/usr/local/sbin\\:/usr/bin, use_pty, env_reset, secure_path=/usr/sbin\\:/usr/bin\\:/sbin\\:/bin, !lecture, !use_pty

User sg1 may run the following commands on vm:

Sudoers entry:
    RunAsUsers: mirror1
    Options: !authenticate
    Commands:
\t/usr/bin/syncgate --config /etc/syncgate/syncgate.toml transfer iso
\t/usr/bin/syncgate --config /etc/syncgate/syncgate.toml fix-perms iso
";

    fn wanted() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([(
            "mirror1".to_string(),
            vec![
                "/usr/bin/syncgate --config /etc/syncgate/syncgate.toml transfer iso".to_string(),
                "/usr/bin/syncgate --config /etc/syncgate/syncgate.toml fix-perms iso".to_string(),
            ],
        )])
    }

    #[test]
    fn the_generated_rule_alone_has_no_problem() {
        let l = parse(GOOD);
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].commands.len(), 2);
        assert!(l.defaults.contains(&"!use_pty".to_string()));
        assert_eq!(problems(&l, &wanted()), Vec::<String>::new());
    }

    #[test]
    fn wider_grants_are_each_named() {
        let text = format!(
            "{GOOD}
Sudoers entry:
    RunAsUsers: www-data
    Options: !authenticate
    Commands:
\tALL

Sudoers entry:
    RunAsUsers: mirror1
    Options: setenv, !authenticate
    Commands:
\t/usr/bin/syncgate --config /etc/syncgate/syncgate.toml transfer iso

Sudoers entry:
    RunAsUsers: mirror1
    Commands:
\t/bin/ls

Sudoers entry:
    RunAsUsers: mirror1
    RunAsGroups: shadow
    Options: !authenticate
    Commands:
\t/usr/bin/syncgate --config /etc/syncgate/syncgate.toml transfer iso
"
        );
        let p = problems(&parse(&text), &wanted());
        let all = p.join("\n");
        assert!(all.contains("run ALL as www-data"), "{all}");
        assert!(all.contains("SETENV"), "{all}");
        assert!(all.contains("run /bin/ls as mirror1"), "{all}");
        assert!(all.contains("no NOPASSWD"), "{all}");
        assert!(all.contains("group(s) shadow"), "{all}");
        assert_eq!(p.len(), 5, "{all}");
    }

    #[test]
    fn defaults_that_keep_the_callers_environment_are_named() {
        let text = GOOD.replace(
            "!lecture, !use_pty",
            "!lecture, !use_pty, !env_reset, env_keep+=\"LD_PRELOAD FOO\", setenv",
        );
        let p = problems(&parse(&text), &wanted()).join("\n");
        assert!(p.contains("!env_reset"), "{p}");
        assert!(p.contains("env_keep+=\"LD_PRELOAD FOO\""), "{p}");
        assert!(p.contains("Defaults setenv"), "{p}");
        // env_reset set again later wins, as in sudo.
        let text = GOOD.replace("!lecture", "!env_reset, env_reset, !lecture");
        assert_eq!(problems(&parse(&text), &wanted()), Vec::<String>::new());
    }

    #[test]
    fn a_rule_running_as_root_or_as_anyone_is_a_problem() {
        let text = format!(
            "{GOOD}
Sudoers entry:
    Options: !authenticate
    Commands:
\t/usr/bin/id

Sudoers entry:
    RunAsUsers: ALL
    Options: !authenticate
    Commands:
\t/usr/bin/syncgate --config /etc/syncgate/syncgate.toml transfer iso
"
        );
        let p = problems(&parse(&text), &wanted()).join("\n");
        assert!(p.contains("/usr/bin/id as root"), "{p}");
        assert!(p.contains("as ALL"), "{p}");
    }
}
