//! `syncgate generate man|complete-bash|complete-zsh|complete-fish`: the
//! man page and shell completions, generated from the clap definitions in
//! [`crate::cli`] so they cannot drift from `--help` (as ripgrep does it).
//! Hidden from `--help`; `packaging/build-deb` runs it.
//!
//! The man page is clap_mangen's title, name, synopsis and global options,
//! plus sections clap does not know about: every subcommand with its own
//! synopsis and options, the SSH verbs, the exit codes, the files and the
//! environment.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, GenerateWhat};
use crate::error::{Error, Exit, Result};

/// What an SSH client may send (`SSH_ORIGINAL_COMMAND`), as syncgate(1)
/// documents it. The tests parse every example with [`crate::gate::request::parse`].
pub const SSH_VERBS: &[(&str, &str)] = &[
    (
        "sync [MIRROR]",
        "Sync MIRROR; without a name, the key's mirror (only if the key has exactly one).",
    ),
    (
        "sync:archive:[MIRROR] [sync:all|sync:stage1|sync:stage2] [sync:mhop] [sync:callback]",
        "A Debian push (runmirrors): these words in any order, each at most once, at most one \
         stage word; anything else is refused. sync:archive:MIRROR selects MIRROR, an empty \
         name or no archive word the key's mirror (only if the key has exactly one). \
         sync:stage1 asks for stage 1 only, sync:stage2 for stage 2 only, sync:all or no \
         stage word for both. sync:all alone syncs all the key's mirrors. sync:mhop and \
         sync:callback are accepted and recorded; syncgate never calls back.",
    ),
    (
        "status [MIRROR] [--json]",
        "State of the key's mirrors: JSON on stdout with --json, text on stderr.",
    ),
    ("help", "What this key may do."),
];

/// Files syncgate reads or that its package installs.
pub fn files() -> Vec<(String, &'static str)> {
    vec![
        (
            crate::config::DEFAULT_PATH.to_string(),
            "The configuration (TOML), owned by root. Mirrors, keys, state_dir, syslog.",
        ),
        (
            "/var/lib/syncgate".to_string(),
            "The state directory (state_dir) of the packaged configuration: per-mirror \
             lock files MIRROR.lock (never removed) and state files MIRROR.state.json, \
             per-key lock files _key.NAME.lock (keys with max_waiting), and audit.log, \
             where audit lines go when syslog does not take them. Owned by the login \
             account, mode 0750 (created by systemd-tmpfiles).",
        ),
        (
            crate::admin::sudoers::INSTALL_PATH.to_string(),
            "The sudoers rule written by syncgate sudoers --install: the login account may \
             run exactly syncgate --config CONFIG transfer MIRROR and fix-perms MIRROR as \
             each mirror's owner.",
        ),
        (
            "~syncgate/.ssh/authorized_keys".to_string(),
            "One line per client key, made by syncgate authorized-key: restrict, from= \
             and command=\"/usr/bin/syncgate ssh --key NAME\".",
        ),
        (
            "/usr/lib/systemd/system/syncgate.service, syncgate.timer".to_string(),
            "The hourly sync --all --trigger timer, run as the login account.",
        ),
        (
            "/usr/share/doc/syncgate/".to_string(),
            "authorized_keys.example and sudoers.example.",
        ),
    ]
}

/// Writes what `what` names to `out`.
pub fn write(what: GenerateWhat, out: &mut dyn Write) -> std::io::Result<()> {
    let shell = match what {
        GenerateWhat::Man => return man(out),
        GenerateWhat::CompleteBash => Shell::Bash,
        GenerateWhat::CompleteZsh => Shell::Zsh,
        GenerateWhat::CompleteFish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut visible_command(), "syncgate", out);
    Ok(())
}

/// The command line without hidden subcommands (clap_complete completes
/// hidden subcommands too): the same name, version, about, global options
/// and visible subcommands.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("syncgate")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(a) = full.get_about() {
        cmd = cmd.about(a.clone());
    }
    cmd
}

/// `syncgate generate WHAT`: writes to stdout.
pub fn run(what: GenerateWhat) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    write(what, &mut stdout)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("cannot write to stdout", e))
}

/// The syncgate(1) man page.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    let mut page = Vec::new();
    render_man(&mut page)?;
    out.write_all(&once_preamble(&page))
}

/// Each clap_mangen/roff render starts with the same two lines that define
/// the `Aq` string; the page needs them once, at the top.
fn once_preamble(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for line in text.lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if !preamble || seen.insert(line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

fn render_man(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    let page = Man::new(cmd.clone())
        .title("SYNCGATE")
        .manual("syncgate manual");
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;

    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    paragraphs(
        &mut r,
        &[
            "syncgate refreshes mirrors of ISO images from their upstreams when a builder \
             asks over SSH, or when the systemd timer fires. Requests are queued per mirror \
             with a kernel lock (flock) and coalesced: a request is served by the first run \
             of its mirror that started after it arrived, and gets that run's result.",
            "Each run first compares with upstream in one rsync dry run and ends there when \
             nothing changed. Otherwise it publishes in two stages: stage 1 transfers \
             everything except checksum files and markers and deletes nothing; stage 2 then \
             publishes those files and applies deletions, so a checksum file never names a \
             missing file. A first sync into an empty dest copies into a private staging \
             directory and publishes it by renames, checksum files and markers last.",
            "The SSH login account (syncgate) cannot write the images. It runs the owner-side \
             commands transfer and fix-perms as each mirror's owner through one sudoers rule \
             (syncgate sudoers --install), which allows exactly those command lines. Every \
             request writes an audit line to syslog (ident syncgate) before anything runs.",
        ],
    );
    r.to_writer(out)?;
    page.render_options_section(out)?;

    let mut r = Roff::new();
    r.control("SH", ["COMMANDS"]);
    r.to_writer(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        subcommand(out, sub)?;
    }

    let mut r = Roff::new();
    ssh_verbs(&mut r);
    exit_status(&mut r);
    files_and_environment(&mut r);

    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "sshd(8) (AUTHORIZED_KEYS FILE FORMAT), sudoers(5), visudo(8), rsync(1), \
         systemd.timer(5), systemd-tmpfiles(8), journalctl(1)",
    )]);
    r.to_writer(out)?;
    page.render_version_section(out)
}

/// SSH VERBS: what a client may send, from [`SSH_VERBS`].
fn ssh_verbs(r: &mut Roff) {
    r.control("SH", ["SSH VERBS"]);
    paragraphs(
        r,
        &[
            "An authorized_keys line with command=\"/usr/bin/syncgate ssh --key NAME\" makes \
           sshd run syncgate ssh for every login with that key. The client's command \
           arrives in SSH_ORIGINAL_COMMAND and is parsed by syncgate, never by a shell; \
           the key's [key.NAME] table decides which verbs and mirrors it may use.",
        ],
    );
    for (verb, meaning) in SSH_VERBS {
        r.control("TP", []);
        r.text(verb_inlines(verb));
        r.text([roman(*meaning)]);
    }
    paragraphs(
        r,
        &[
            "Anything else is refused before anything runs, with one line on stderr and an \
           audit line: requests over 256 bytes, control bytes, non-UTF-8, shell syntax, \
           unknown verbs, options and bad mirror names (exit 64), and verbs, mirrors or \
           client networks the key may not use (exit 77). An interactive login prints the \
           key's help and exits 64; there is never a shell.",
        ],
    );
}

/// EXIT STATUS: every [`Exit`] with its meaning.
fn exit_status(r: &mut Roff) {
    r.control("SH", ["EXIT STATUS"]);
    for exit in Exit::ALL {
        r.control("TP", []);
        r.text([bold(exit.code().to_string())]);
        r.text([roman(exit.meaning())]);
    }
}

/// FILES and ENVIRONMENT.
fn files_and_environment(r: &mut Roff) {
    r.control("SH", ["FILES"]);
    for (path, meaning) in files() {
        r.control("TP", []);
        r.text([italic(path)]);
        r.text([roman(meaning)]);
    }

    r.control("SH", ["ENVIRONMENT"]);
    for (var, meaning) in [
        (
            "SSH_ORIGINAL_COMMAND",
            "The client's request, read by syncgate ssh.",
        ),
        (
            "SSH_CONNECTION",
            "The client's address, checked against the key's from networks by syncgate ssh.",
        ),
    ] {
        r.control("TP", []);
        r.text([bold(var)]);
        r.text([roman(meaning)]);
    }
    paragraphs(
        r,
        &["Children (sudo, rsync) get a cleared environment with a fixed PATH."],
    );
}

/// One `.SS` per subcommand: its synopsis, its long help and its options.
fn subcommand(out: &mut dyn Write, sub: &clap::Command) -> std::io::Result<()> {
    // Unbuilt and without -h: the global options are listed once, above.
    let sub = sub
        .clone()
        .bin_name(format!("syncgate {}", sub.get_name()))
        .disable_help_flag(true);
    let page = Man::new(sub.clone());
    let mut r = Roff::new();
    r.control("SS", [sub.get_name()]);
    r.to_writer(out)?;
    // clap_mangen's sections under our .SS: drop their .SH headings.
    let mut buf = Vec::new();
    page.render_synopsis_section(&mut buf)?;
    out.write_all(&without_headings(&buf))?;
    let mut r = Roff::new();
    r.control("PP", []);
    r.to_writer(out)?;
    let mut buf = Vec::new();
    page.render_description_section(&mut buf)?;
    out.write_all(&without_headings(&buf))?;
    if sub.get_arguments().next().is_some() {
        let mut buf = Vec::new();
        page.render_options_section(&mut buf)?;
        let mut r = Roff::new();
        r.control("RS", []);
        r.to_writer(out)?;
        out.write_all(&without_headings(&buf))?;
        let mut r = Roff::new();
        r.control("RE", []);
        r.to_writer(out)?;
    }
    Ok(())
}

/// Removes `.SH` lines from clap_mangen output.
fn without_headings(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::new();
    let mut first = true;
    for line in text.lines().filter(|l| !l.starts_with(".SH ")) {
        if first && line.is_empty() {
            continue;
        }
        first = false;
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

fn paragraphs(r: &mut Roff, texts: &[&str]) {
    for t in texts {
        r.control("PP", []);
        r.text([roman(*t)]);
    }
}

/// `sync [MIRROR]` → bold words, italic metavariables.
fn verb_inlines(verb: &str) -> Vec<Inline> {
    let mut v = Vec::new();
    for (i, word) in verb.split(' ').enumerate() {
        if i > 0 {
            v.push(roman(" "));
        }
        let upper = |s: &str| s.chars().any(|c| c.is_ascii_uppercase());
        match word.split_once(":archive:") {
            Some((head, name)) => {
                v.push(bold(format!("{head}:archive:")));
                v.push(italic(name));
            }
            None if upper(word) => v.push(italic(word)),
            None => v.push(bold(word)),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        let mut buf = Vec::new();
        man(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn the_roff_preamble_appears_once() {
        let page = page();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "one .ie/.el pair");
    }

    #[test]
    fn every_visible_subcommand_has_a_section() {
        let page = page();
        for sub in Cli::command().get_subcommands() {
            let heading = format!(".SS {}\n", sub.get_name());
            assert_eq!(page.contains(&heading), !sub.is_hide_set(), "{heading}");
        }
        assert!(
            !page.contains("generate"),
            "the hidden subcommand stays hidden"
        );
    }

    #[test]
    fn subcommand_options_are_documented() {
        let page = page();
        for needle in [
            "\\-\\-trigger",
            "\\-\\-all",
            "\\-\\-json",
            "\\-\\-install",
            "\\-\\-from",
        ] {
            assert!(page.contains(needle), "{needle} missing");
        }
        assert!(page.contains("timer"), "possible values of --trigger");
    }

    #[test]
    fn exit_codes_cover_the_exit_module_and_the_help_text() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 64, 70, 75, 77, 78, 255]);
        let after = Cli::command().get_after_help().unwrap().to_string();
        let page = page();
        for c in codes {
            assert!(after.contains(&format!("{c} ")), "--help lacks exit {c}");
            assert!(
                page.contains(&format!(".TP\n\\fB{c}\\fR\n")),
                "man lacks exit {c}"
            );
        }
    }

    #[test]
    fn every_documented_ssh_verb_parses() {
        for example in [
            "sync",
            "sync iso",
            "sync:all",
            "sync:archive:iso",
            "sync:stage1",
            "sync:stage2",
            " sync:archive:iso sync:mhop sync:stage1",
            "sync:archive: sync:callback",
            "status",
            "status iso",
            "status iso --json",
            "help",
        ] {
            // The verb, and every push word.
            let words = example.split_whitespace().enumerate();
            for (_, word) in words.filter(|(i, w)| *i == 0 || w.starts_with("sync:")) {
                let head = word.split(":archive:").next().unwrap();
                assert!(
                    SSH_VERBS.iter().any(|(v, _)| v.contains(head)),
                    "{example}: {word} undocumented"
                );
            }
            assert!(
                crate::gate::request::parse(Some(example.as_bytes())).is_ok(),
                "{example} does not parse"
            );
        }
    }

    #[test]
    fn ssh_verbs_table_uses_exactly_the_key_verbs() {
        use crate::config::Verb;
        // Each entry starts with a key verb (push words are `sync:...`).
        let heads: Vec<Verb> = SSH_VERBS
            .iter()
            .map(|(usage, _)| {
                let head = usage.split([' ', ':', ',']).next().unwrap();
                head.parse()
                    .unwrap_or_else(|e| panic!("SSH_VERBS entry {usage:?}: {e}"))
            })
            .collect();
        for verb in Verb::ALL {
            assert!(heads.contains(&verb), "SSH_VERBS lacks {verb}");
        }
    }

    #[test]
    fn files_section_names_the_paths_the_code_uses() {
        let page = page();
        for p in [
            crate::config::DEFAULT_PATH,
            crate::admin::sudoers::INSTALL_PATH,
            "/var/lib/syncgate",
            "~syncgate/.ssh/authorized_keys",
        ] {
            assert!(page.contains(p), "{p}");
        }
    }

    #[test]
    fn completions_know_the_subcommands_but_not_generate() {
        for what in [
            GenerateWhat::CompleteBash,
            GenerateWhat::CompleteZsh,
            GenerateWhat::CompleteFish,
        ] {
            let mut buf = Vec::new();
            write(what, &mut buf).unwrap();
            let text = String::from_utf8(buf).unwrap();
            for sub in [
                "sync",
                "status",
                "authorized-key",
                "sudoers",
                "check",
                "fix-perms",
            ] {
                assert!(text.contains(sub), "{what:?}: {sub}");
            }
            assert!(text.contains("trigger"), "{what:?}");
            assert!(!text.contains("generate"), "{what:?} completes generate");
        }
    }
}
