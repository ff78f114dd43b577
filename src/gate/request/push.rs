//! Debian's push words (`sync:archive:NAME sync:stage1 ...`), as runmirrors
//! sends them and ftpsync receives them; the grammar is in the parent
//! module's documentation.

use super::{name_arg, quote, Refusal, Request, Stage, Target};

/// Which ftpsync push words a `sync` arrived as, besides its stage (which
/// is the request's `stage`), for the audit line and the canonical form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PushWords {
    /// A `sync:archive:NAME` word was sent (its NAME, or `Target::Default`
    /// for an empty one, is the request's target).
    pub archive: bool,
    /// `sync:mhop`: a multi-hop push. Nothing more to do for a receiver.
    pub mhop: bool,
    /// `sync:callback`: ftpsync would ssh back to the pusher when done;
    /// syncgate records it and never calls back.
    pub callback: bool,
}

/// One push word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word<'a> {
    /// `sync:archive:` and what follows (maybe empty, not yet checked).
    Archive(&'a str),
    Stage(Stage),
    Mhop,
    Callback,
}

const ARCHIVE: &str = "sync:archive:";

fn word(w: &str) -> Option<Word<'_>> {
    Some(match w {
        "sync:all" => Word::Stage(Stage::All),
        "sync:stage1" => Word::Stage(Stage::Stage1),
        "sync:stage2" => Word::Stage(Stage::Stage2),
        "sync:mhop" => Word::Mhop,
        "sync:callback" => Word::Callback,
        _ => Word::Archive(w.strip_prefix(ARCHIVE)?),
    })
}

fn stage_word(s: Stage) -> &'static str {
    match s {
        Stage::All => "sync:all",
        Stage::Stage1 => "sync:stage1",
        Stage::Stage2 => "sync:stage2",
    }
}

/// Whether `w` is a push word (a `sync:archive:` word with a bad name
/// counts: [`parse`] refuses the name).
pub(super) fn is_push_word(w: &str) -> bool {
    word(w).is_some()
}

fn bad(problem: &'static str, arg: &str) -> Refusal {
    Refusal::BadArgument {
        verb: "push",
        problem,
        arg: quote(arg),
    }
}

/// Parses a command whose first word is a push word: every word must be
/// one, each at most once, at most one stage word. The first word that
/// breaks a rule decides the refusal.
pub(super) fn parse(words: &[String]) -> Result<Request, Refusal> {
    // None: no archive word; Some(None): `sync:archive:` (empty).
    let mut archive: Option<Option<super::Name>> = None;
    let mut stage: Option<Stage> = None;
    let (mut mhop, mut callback) = (false, false);
    for w in words {
        let Some(parsed) = word(w) else {
            return Err(bad(
                "not a push word; these are: sync:archive:NAME, sync:all, sync:stage1, sync:stage2, sync:mhop, sync:callback",
                w,
            ));
        };
        match parsed {
            Word::Archive(name) => {
                let name = match name {
                    "" => None,
                    n => Some(name_arg("sync:archive", n)?),
                };
                if archive.is_some() {
                    return Err(bad("sync:archive: given twice", w));
                }
                archive = Some(name);
            }
            Word::Stage(s) => match stage {
                Some(old) if old == s => return Err(bad("word given twice", w)),
                Some(_) => {
                    return Err(bad(
                        "only one of sync:all, sync:stage1, sync:stage2 may be given",
                        w,
                    ))
                }
                None => stage = Some(s),
            },
            Word::Mhop if mhop => return Err(bad("word given twice", w)),
            Word::Mhop => mhop = true,
            Word::Callback if callback => return Err(bad("word given twice", w)),
            Word::Callback => callback = true,
        }
    }
    let target = match &archive {
        Some(Some(name)) => Target::Named(name.clone()),
        Some(None) => Target::Default,
        // `sync:all` alone has always meant every mirror of the key.
        None if stage == Some(Stage::All) => Target::All,
        None => Target::Default,
    };
    Ok(Request::Sync {
        target,
        stage: stage.unwrap_or_default(),
        push: Some(PushWords {
            archive: archive.is_some(),
            mhop,
            callback,
        }),
    })
}

/// The canonical words of a push request: archive, `sync:mhop`, stage,
/// `sync:callback` (runmirrors' order), single spaces. `sync:all` is only
/// written where it changes the meaning (without an archive word).
pub(super) fn canonical(target: &Target, stage: Stage, push: PushWords) -> String {
    let mut out: Vec<String> = Vec::new();
    match target {
        Target::Named(n) => out.push(format!("{ARCHIVE}{n}")),
        Target::Default if push.archive => out.push(ARCHIVE.to_owned()),
        Target::Default | Target::All => {}
    }
    if push.mhop {
        out.push("sync:mhop".to_owned());
    }
    match (target, stage) {
        (Target::All, _) => out.push(stage_word(Stage::All).to_owned()),
        (_, Stage::All) => {}
        (_, s) => out.push(stage_word(s).to_owned()),
    }
    if push.callback {
        out.push("sync:callback".to_owned());
    }
    if out.is_empty() {
        // Only a hand-built request gets here: no word says anything.
        return "sync".to_owned();
    }
    out.join(" ")
}

#[cfg(test)]
pub(crate) mod tests;
