//! The login account's authorized_keys lines, read the way sshd reads
//! them, and what makes one give its key more than the gate.

use std::path::Path;

/// Splits an authorized_keys line into its options (none when the line
/// starts with the key type) the way sshd reads them: the options field ends
/// at the first blank outside double quotes, options are separated by
/// commas outside double quotes, and `\"` inside quotes is a literal quote.
/// Returns (lowercased name, unquoted value) pairs.
pub fn key_options(line: &str) -> Vec<(String, Option<String>)> {
    const KEY_TYPES: &[&str] = &["ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-"];
    let line = line.trim_start();
    if KEY_TYPES.iter().any(|t| line.starts_with(t)) {
        return Vec::new();
    }
    fn finish(
        name: &mut String,
        value: &mut Option<String>,
        out: &mut Vec<(String, Option<String>)>,
    ) {
        if !name.is_empty() {
            out.push((name.to_ascii_lowercase(), value.take()));
        }
        name.clear();
        *value = None;
    }
    let mut out = Vec::new();
    let mut name = String::new();
    let mut value: Option<String> = None;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' if quoted => match chars.next() {
                Some('"') => '"',
                Some(n) => {
                    value.as_mut().unwrap_or(&mut name).push('\\');
                    n
                }
                None => break,
            },
            '"' => {
                quoted = !quoted;
                continue;
            }
            ',' if !quoted => {
                finish(&mut name, &mut value, &mut out);
                continue;
            }
            '=' if !quoted && value.is_none() => {
                value = Some(String::new());
                continue;
            }
            c if c.is_whitespace() && !quoted => break,
            c => c,
        };
        match &mut value {
            Some(v) => v.push(literal),
            None => name.push(literal),
        }
    }
    finish(&mut name, &mut value, &mut out);
    out
}

/// Options that take back part of what `restrict` turns off.
pub const UNDO_RESTRICT: &[&str] = &[
    "pty",
    "port-forwarding",
    "agent-forwarding",
    "x11-forwarding",
    "user-rc",
    "permitopen",
    "permitlisten",
    "tunnel",
    "environment",
];

/// Why a forced command is not exactly syncgate's own gate
/// (`BINARY [--config PATH] ssh --key NAME`), if it is not. sshd runs it as
/// `$SHELL -c COMMAND`, so anything a shell would read as more than plain
/// words (`;`, `&&`, `$(…)`, quotes, redirections, a second line) could
/// run something after or instead of the gate: only plain words pass.
pub fn forced_command_problem(command: &str, binary: &Path) -> Option<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c);
    if let Some(c) = command.chars().find(|c| !plain(*c) && *c != ' ') {
        return Some(format!(
            "forces {command:?}, which holds {c:?}: the shell sshd runs it with could run more than the gate"
        ));
    }
    let words: Vec<&str> = command.split(' ').collect();
    let bin = binary.display().to_string();
    let tail: &[&str] = match words.as_slice() {
        [b, "--config", path, rest @ ..] if *b == bin && path.starts_with('/') => rest,
        [b, rest @ ..] if *b == bin => rest,
        _ => &[],
    };
    match tail {
        ["ssh", "--key", name] if crate::config::valid_name(name) => None,
        _ => Some(format!(
            "forces {command:?}, which is not exactly `{bin} [--config PATH] ssh --key NAME`"
        )),
    }
}

/// Why an authorized_keys line of the login account gives its key more than
/// the gate, if it does: it needs `restrict`, no option that undoes part of
/// it, and a forced command that is exactly `BINARY [--config PATH] ssh --key
/// NAME`.
pub fn key_line_problem(line: &str, binary: &Path) -> Option<String> {
    let opts = key_options(line);
    let command = opts
        .iter()
        .find(|(n, _)| n == "command")
        .and_then(|(_, v)| v.clone());
    let Some(command) = command else {
        return Some("has no forced command".into());
    };
    if let Some(why) = forced_command_problem(&command, binary) {
        return Some(why);
    }
    if opts.iter().filter(|(n, _)| n == "command").count() > 1 {
        return Some("has more than one command= option".into());
    }
    if !opts.iter().any(|(n, _)| n == "restrict") {
        return Some("has no `restrict` option".into());
    }
    let undone: Vec<&str> = opts
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| UNDO_RESTRICT.contains(n))
        .collect();
    if !undone.is_empty() {
        return Some(format!(
            "undoes part of `restrict` with {}",
            undone.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_keys_options_are_read_like_sshd_reads_them() {
        let bin = Path::new("/usr/bin/syncgate");
        let good = r#"restrict,from="10.0.0.0/8",command="/usr/bin/syncgate --config /etc/s.toml ssh --key j" ssh-ed25519 AAAA j"#;
        assert_eq!(key_line_problem(good, bin), None);
        let opts = key_options(good);
        assert_eq!(opts[1], ("from".into(), Some("10.0.0.0/8".into())));
        assert_eq!(
            opts[2].1.as_deref(),
            Some("/usr/bin/syncgate --config /etc/s.toml ssh --key j")
        );
        // No options at all: a shell.
        assert!(key_line_problem("ssh-ed25519 AAAA j", bin)
            .unwrap()
            .contains("no forced command"));
        // The right words in the comment are not options.
        let fake = r#"ssh-ed25519 AAAA restrict,command="/usr/bin/syncgate ssh --key j""#;
        assert!(key_line_problem(fake, bin).is_some());
        let fake = r#"no-pty ssh-ed25519 AAAA restrict,command="/usr/bin/syncgate ssh --key j""#;
        assert!(key_line_problem(fake, bin).is_some());
        // A forced command that is not the gate.
        let other = r#"restrict,command="/bin/sh -c 'x ssh --key j'" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(other, bin).unwrap().contains("forces"));
        // No restrict: forwarding and a pty stay on.
        let open = r#"command="/usr/bin/syncgate ssh --key j" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(open, bin).unwrap().contains("restrict"));
        // "restrict" inside a quoted value is not the option.
        let quoted = r#"command="/usr/bin/syncgate ssh --key j,restrict" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(quoted, bin).unwrap().contains("restrict"));
        // Escaped quotes stay inside the value.
        let esc = r#"restrict,command="/usr/bin/syncgate \"x\" ssh --key j" ssh-ed25519 AAAA"#;
        assert_eq!(
            key_options(esc)[1].1.as_deref(),
            Some(r#"/usr/bin/syncgate "x" ssh --key j"#)
        );
    }

    #[test]
    fn a_command_chained_after_the_gate_or_an_undone_restrict_is_caught() {
        let bin = Path::new("/usr/bin/syncgate");
        let chained = r#"restrict,pty,command="/usr/bin/syncgate ssh --key jenkins; exec /bin/sh -i" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(chained, bin).unwrap().contains("';'"));
        for bad in [
            "/usr/bin/syncgate ssh --key j && sh",
            "/usr/bin/syncgate ssh --key j|sh",
            "/usr/bin/syncgate ssh --key $(id)",
            "/usr/bin/syncgate ssh --key j\nsh",
            "/usr/bin/syncgate ssh --key j extra",
            "/usr/bin/syncgate ssh --key",
            "/usr/bin/syncgate status",
            "/usr/bin/syncgate --config etc/x.toml ssh --key j",
            "/usr/bin/syncgate  ssh --key j",
            "/usr/bin/syncgate-evil ssh --key j",
            "/usr/bin/syncgate ssh --key j >/tmp/x",
        ] {
            assert!(forced_command_problem(bad, bin).is_some(), "{bad}");
        }
        for good in [
            "/usr/bin/syncgate ssh --key jenkins",
            "/usr/bin/syncgate --config /etc/syncgate/other.toml ssh --key j-2",
        ] {
            assert_eq!(forced_command_problem(good, bin), None, "{good}");
        }
        for undo in UNDO_RESTRICT {
            let line = format!(
                r#"restrict,{undo},command="/usr/bin/syncgate ssh --key j" ssh-ed25519 AAAA"#
            );
            assert!(
                key_line_problem(&line, bin).unwrap().contains("undoes"),
                "{undo}"
            );
        }
        let with_value = r#"restrict,permitopen="localhost:80",command="/usr/bin/syncgate ssh --key j" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(with_value, bin)
            .unwrap()
            .contains("permitopen"));
        let two = r#"restrict,command="/usr/bin/syncgate ssh --key j",command="/bin/sh" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(two, bin).is_some());
        let fine = r#"restrict,no-pty,from="10.0.0.0/8",command="/usr/bin/syncgate ssh --key j" ssh-ed25519 AAAA"#;
        assert_eq!(key_line_problem(fine, bin), None);
    }
}
