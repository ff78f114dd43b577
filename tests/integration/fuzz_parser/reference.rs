//! The reference grammar: the verb table of src/gate/request.rs, written
//! independently for inputs without quotes (split on spaces, nothing else
//! special).

use syncgate::gate::request::{Name, PushWords, Request, Stage, Target};

fn named(n: &str) -> Option<Target> {
    Name::new(n).map(Target::Named)
}

/// What `parse` must make of `text`, or `None` where it must refuse.
pub fn reference(text: &str) -> Option<Request> {
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let sync = |target| {
        Some(Request::Sync {
            target,
            stage: Stage::All,
            push: None,
        })
    };
    match words.as_slice() {
        ["help"] => Some(Request::Help),
        ["sync"] => sync(Target::Default),
        ["sync", n] => sync(named(n)?),
        [first, ..] if first.starts_with("sync:") => push(&words),
        ["status", rest @ ..] if rest.len() <= 2 => {
            let json = rest.iter().filter(|w| **w == "--json").count();
            let names: Vec<&&str> = rest.iter().filter(|w| **w != "--json").collect();
            if json > 1 || names.len() > 1 {
                return None;
            }
            let mirror = match names.first() {
                Some(n) => Some(Name::new(n)?),
                None => None,
            };
            Some(Request::Status {
                mirror,
                json: json == 1,
            })
        }
        _ => None,
    }
}

/// Debian's push words: each known word at most once, at most one stage
/// word, any order, nothing else.
fn push(words: &[&str]) -> Option<Request> {
    const FLAGS: [&str; 5] = [
        "sync:all",
        "sync:stage1",
        "sync:stage2",
        "sync:mhop",
        "sync:callback",
    ];
    let archives: Vec<&str> = words
        .iter()
        .filter_map(|w| w.strip_prefix("sync:archive:"))
        .collect();
    let known = archives.len() + words.iter().filter(|w| FLAGS.contains(w)).count();
    let has = |f: &str| words.contains(&f);
    let once = FLAGS
        .iter()
        .all(|f| words.iter().filter(|w| *w == f).count() <= 1);
    let stages: Vec<Stage> = [
        ("sync:all", Stage::All),
        ("sync:stage1", Stage::Stage1),
        ("sync:stage2", Stage::Stage2),
    ]
    .into_iter()
    .filter(|(w, _)| has(w))
    .map(|(_, s)| s)
    .collect();
    if known != words.len() || archives.len() > 1 || stages.len() > 1 || !once {
        return None;
    }
    let target = match archives.first() {
        Some(&"") => Target::Default,
        Some(n) => named(n)?,
        None if stages == [Stage::All] => Target::All,
        None => Target::Default,
    };
    Some(Request::Sync {
        target,
        stage: stages.first().copied().unwrap_or(Stage::All),
        push: Some(PushWords {
            archive: !archives.is_empty(),
            mhop: has("sync:mhop"),
            callback: has("sync:callback"),
        }),
    })
}
