//! The rsync command lines of the owner side: the plan, the first-sync copy,
//! the two stages and the probe between them. Each is built here and only
//! here.

use std::path::Path;

use crate::config::{Config, Mirror, Upstream};
use crate::owner::dest::{FRESH_DIR, RSYNC_PARTIAL_DIR, TEMP_DIR};

/// The ssh client rsync runs for `ssh://` upstreams.
pub const SSH: &str = "/usr/bin/ssh";

fn common(cfg: &Config, m: &Mirror) -> Vec<String> {
    with_temp_dir(cfg, m, true)
}

fn with_temp_dir(cfg: &Config, m: &Mirror, temp_dir: bool) -> Vec<String> {
    let mut v: Vec<String> = vec![
        cfg.rsync.display().to_string(),
        "-rlpt".into(),
        "--safe-links".into(),
        "--no-human-readable".into(),
        "--stats".into(),
        format!("--chmod=D{:04o},F{:04o}", m.dir_mode, m.file_mode),
        "--group".into(),
        format!("--groupmap=*:{}", m.reader_group),
        format!("--timeout={}", m.io_timeout),
    ];
    if temp_dir {
        // Relative: rsync resolves it against dest. An absolute temp dir
        // makes rsync 3.5 walk the path from / for every file (measured: a
        // first sync of 50,000 files took 1.85x as long).
        v.push(format!("--temp-dir={TEMP_DIR}"));
    }
    private_names(&mut v);
    // Our own trace file: never taken from upstream, never deleted.
    if let Some(rel) = crate::owner::trace::rel_path(m) {
        v.push(format!("--filter=P /{}", rel.display()));
        v.push(format!("--exclude=/{}", rel.display()));
    }
    // Upstream's "being updated" markers are never copied (ftpsync's rule).
    for b in &m.busy_marker {
        v.push(format!("--exclude=/{b}"));
    }
    match &m.upstream {
        Upstream::Daemon(_) => {
            v.push(format!("--contimeout={}", m.io_timeout.min(300)));
            v.push("--no-motd".into());
        }
        Upstream::Ssh(_) => {
            v.push(format!(
                "--rsh={SSH} -oBatchMode=yes -oStrictHostKeyChecking=yes"
            ));
        }
        Upstream::Local(_) => {}
    }
    if m.bwlimit > 0 {
        v.push(format!("--bwlimit={}", m.bwlimit));
    }
    for e in &m.exclude {
        v.push(format!("--exclude={e}"));
    }
    v
}

/// syncgate's and rsync's own names inside dest are never taken from
/// upstream nor deleted in dest, whatever their type: no trailing `/`, so a
/// file or a symlink of that name is excluded too (an upstream
/// `.syncgate-tmp` symlink would otherwise replace the private dir, and
/// a file would make every first sync fail). The private dir is at the top
/// of dest only; rsync's holding dir may be anywhere (`-p`: perishable, as
/// rsync's own rule for it, so it never keeps a deleted directory alive).
/// These come before the admin's patterns: first match wins.
fn private_names(v: &mut Vec<String>) {
    v.push(format!("--filter=P /{TEMP_DIR}"));
    v.push(format!("--exclude=/{TEMP_DIR}"));
    v.push(format!("--filter=-p {RSYNC_PARTIAL_DIR}"));
}

/// What rsync prints while it transfers: one line for the whole transfer
/// (bytes, rate, its estimate, files checked), rewritten about once a
/// second (src/owner/rsync/progress.rs reads it). Only on the passes that
/// move data: a dry run's lines would be noise among its itemized changes.
const PROGRESS: &str = "--info=progress2";

fn progress(v: &mut Vec<String>) {
    v.push(PROGRESS.into());
}

/// Whether `argv` is a plan: a dry run that itemizes (and counts in its
/// stats) what a transfer would move.
pub fn is_plan(argv: &[String]) -> bool {
    argv.iter().any(|a| a == "--dry-run") && argv.iter().any(|a| a == "--itemize-changes")
}

/// Whether `argv` moves data (and reports its progress).
pub fn reports_progress(argv: &[String]) -> bool {
    argv.iter().any(|a| a == PROGRESS)
}

fn endpoints(v: &mut Vec<String>, m: &Mirror) {
    v.push(m.upstream.source_arg());
    v.push(format!("{}/", m.dest.display()));
}

/// The plan, run first when dest already holds a mirror: a dry run over
/// everything (the last files included), itemizing what would change,
/// naming the unsafe symlinks it skips (`--info=name1`), and counting the
/// file list by type (`--stats`). When it itemizes nothing and dest holds
/// exactly the entries it listed, nothing is to be published or deleted and
/// the sync ends after this one pass (src/owner/plan.rs).
pub fn rsync_plan(cfg: &Config, m: &Mirror) -> Vec<String> {
    let mut v = common(cfg, m);
    v.push("--dry-run".into());
    v.push("--itemize-changes".into());
    v.push("--info=name1".into());
    endpoints(&mut v, m);
    v
}

/// The plan of a snapshot-published mirror: [`rsync_plan`] against the
/// live snapshot `live`. With `delete`, rsync also counts exactly what the
/// new snapshot would no longer have (its stats' deleted files, checked
/// against max_delete before anything is built); that costs a second look
/// at every directory, so it runs only when the counts the plan made
/// cannot say ([`crate::owner::plan::gone`]). No `--temp-dir`: a dry run
/// writes nothing.
pub fn rsync_snapshot_plan(cfg: &Config, m: &Mirror, live: &Path, delete: bool) -> Vec<String> {
    let mut v = with_temp_dir(cfg, m, false);
    v.push("--dry-run".into());
    v.push("--itemize-changes".into());
    v.push("--info=name1".into());
    if delete {
        v.push("--delete".into());
    }
    v.push(m.upstream.source_arg());
    v.push(format!("{}/", live.display()));
    v
}

/// Building a snapshot: one pass into the private directory `build`, which
/// starts as a link farm of the live snapshot (src/owner/snapshot/farm.rs).
/// A changed file is written next to its target and renamed into place, as
/// plain `rsync -a` does (never `--inplace`): it becomes a new inode, and
/// the live snapshot's stays as it was. `--delete` removes what upstream no
/// longer has (from the farm, or what an unfinished build left).
pub fn rsync_snapshot(cfg: &Config, m: &Mirror, build: &Path) -> Vec<String> {
    let mut v = with_temp_dir(cfg, m, false);
    progress(&mut v);
    v.push("--delete".into());
    v.push(m.upstream.source_arg());
    v.push(format!("{}/", build.display()));
    v
}

/// The busy probe: a dry run over upstream's top level only, listing the
/// entries that match a `busy_marker` (its stats count them: more than the
/// top directory itself means upstream is being updated). `dest`: a path
/// that need not exist (nothing is written).
pub fn rsync_busy_probe(cfg: &Config, m: &Mirror, dest: &Path) -> Vec<String> {
    let mut v = with_temp_dir(cfg, m, false);
    // First match wins: these come before the exclusions in `v`.
    let includes: Vec<String> = m
        .busy_marker
        .iter()
        .map(|b| format!("--include=/{b}"))
        .collect();
    v.splice(1..1, includes);
    v.push("--dry-run".into());
    v.push("--exclude=*".into());
    v.push(m.upstream.source_arg());
    v.push(format!("{}/", dest.display()));
    v
}

/// The upstream probe of a mirror with a change marker: one small real
/// transfer, into the private directory `dir`, of the entries at
/// upstream's top that match a `busy_marker` and of the change `marker`
/// (with the directories above it), and nothing else. Both are read from
/// `dir` afterwards (src/owner/busy.rs, src/owner/marker.rs).
pub fn rsync_upstream_probe(cfg: &Config, m: &Mirror, marker: &str, dir: &Path) -> Vec<String> {
    let mut v = with_temp_dir(cfg, m, false);
    // First match wins: these come before the exclusions in `v`.
    let mut includes: Vec<String> = m
        .busy_marker
        .iter()
        .map(|b| format!("--include=/{b}"))
        .collect();
    let parts: Vec<&str> = marker.split('/').collect();
    for i in 1..parts.len() {
        includes.push(format!("--include=/{}/", parts[..i].join("/")));
    }
    includes.push(format!("--include=/{marker}"));
    v.splice(1..1, includes);
    v.push("--exclude=*".into());
    v.push(m.upstream.source_arg());
    v.push(format!("{}/", dir.display()));
    v
}

/// The first sync into an empty dest: one pass into a private staging
/// directory (mode 0700 `TEMP_DIR`), which is published by renames when
/// complete (src/owner/publish.rs). rsync writes its temporary files next to
/// their targets there, as plain `rsync -a` does. `--delete` only ever acts
/// inside the staging copy: it clears what an interrupted first sync left
/// that upstream no longer has, when the next one resumes it.
pub fn rsync_fresh(cfg: &Config, m: &Mirror) -> Vec<String> {
    let mut v = with_temp_dir(cfg, m, false);
    progress(&mut v);
    v.push("--delete".into());
    v.push(m.upstream.source_arg());
    v.push(format!(
        "{}/",
        m.dest.join(TEMP_DIR).join(FRESH_DIR).display()
    ));
    v
}

/// What rsync prints when `--max-delete` held deletions back: a notice
/// with the count, and its exit summary. Stage 1 asks for that on purpose
/// (`--max-delete=0`, to count the deletions stage 2 would do), so there
/// both are expected and not shown to the caller; the count is read from
/// the notice all the same ([`crate::owner::rsync::Stats`]).
const COUNTING_NOISE: [&str; 2] = [
    "Deletions stopped due to --max-delete limit (",
    "rsync error: the --max-delete limit stopped deletions (code 25)",
];

/// Whether `argv` is the counting pass ([`rsync_stage1`]): it deletes
/// nothing on purpose. (Stage 2 may have `--max-delete=0` too, from the
/// config; its deletions are real, and so is what it says about them.)
pub fn counts_deletions(argv: &[String]) -> bool {
    argv.iter().any(|a| a == "--max-delete=0") && !argv.iter().any(|a| a == "--delay-updates")
}

/// Whether `line` (of the counting pass's stderr) is one it prints
/// because it deleted nothing on purpose.
pub fn is_counting_noise(line: &str) -> bool {
    COUNTING_NOISE.iter().any(|p| line.starts_with(p))
}

/// Stage 1: everything except the "last" patterns, deleting nothing.
/// `--delete --max-delete=0` makes rsync count (and not perform) the
/// deletions stage 2 would do, so the max_delete guard fires before any
/// checksum file is published.
pub fn rsync_stage1(cfg: &Config, m: &Mirror) -> Vec<String> {
    let mut v = common(cfg, m);
    progress(&mut v);
    v.push("--delete".into());
    v.push("--max-delete=0".into());
    for l in &m.last {
        v.push(format!("--exclude={l}"));
    }
    endpoints(&mut v, m);
    v
}

/// Stage 2: everything, with delayed updates and delayed deletes, so files
/// that changed upstream after stage 1 land together with the checksum
/// files and markers that name them.
pub fn rsync_stage2(cfg: &Config, m: &Mirror) -> Vec<String> {
    let mut v = common(cfg, m);
    progress(&mut v);
    v.push("--delay-updates".into());
    v.push("--delete-delay".into());
    v.push(format!("--max-delete={}", m.max_delete));
    endpoints(&mut v, m);
    v
}

/// The probe between the stages: a dry run over the "last" files only,
/// itemizing what stage 2 would publish or delete among them. When stage 1
/// found nothing to delete and this finds nothing to publish, upstream has
/// no new checksum file or marker and stage 2 is skipped, which keeps a
/// no-change resync close to a single rsync pass. Otherwise stage 2 runs in
/// full.
pub fn rsync_probe(cfg: &Config, m: &Mirror) -> Vec<String> {
    let mut v = common(cfg, m);
    v.push("--dry-run".into());
    v.push("--itemize-changes".into());
    v.push("--delete".into());
    v.push("--include=*/".into());
    for l in &m.last {
        v.push(format!("--include={l}"));
    }
    v.push("--exclude=*".into());
    endpoints(&mut v, m);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "state_dir = \"/var/lib/syncgate\"\nprivilege = \"direct\"\n\n[mirror.m]\nupstream = \"rsync://example.org/m/\"\ndest = \"/srv/m\"\nowner = \"root\"\nreader_group = \"root\"\nexclude = [\"*.tmp\"]\nmax_delete = 0\n";
        Config::parse(Path::new("/etc/syncgate/syncgate.toml"), text).unwrap()
    }

    #[test]
    fn every_rsync_excludes_and_protects_the_private_names_first() {
        let cfg = config();
        let m = cfg.mirror("m").unwrap();
        for argv in [
            rsync_plan(&cfg, m),
            rsync_fresh(&cfg, m),
            rsync_stage1(&cfg, m),
            rsync_stage2(&cfg, m),
            rsync_probe(&cfg, m),
        ] {
            let at = |a: &str| argv.iter().position(|x| x == a);
            let (p, x, t) = (
                at("--filter=P /.syncgate-tmp").expect("protect"),
                at("--exclude=/.syncgate-tmp").expect("exclude"),
                at("--filter=-p .~tmp~").expect("holding dir"),
            );
            let admin = at("--exclude=*.tmp").unwrap();
            assert!(p < admin && x < admin && t < admin, "{argv:?}");
            assert!(
                !argv.iter().any(|a| a.ends_with(".syncgate-tmp/")),
                "{argv:?}"
            );
        }
    }

    #[test]
    fn upstreams_busy_marker_is_never_copied_and_the_probe_lists_only_it() {
        let cfg = config();
        let m = cfg.mirror("m").unwrap();
        let dest = Path::new("/srv/m");
        for argv in [
            rsync_plan(&cfg, m),
            rsync_fresh(&cfg, m),
            rsync_stage1(&cfg, m),
            rsync_stage2(&cfg, m),
            rsync_snapshot(&cfg, m, dest),
            rsync_snapshot_plan(&cfg, m, dest, true),
        ] {
            assert!(
                argv.iter()
                    .any(|a| a == "--exclude=/Archive-Update-in-Progress-*"),
                "{argv:?}"
            );
        }
        let probe = rsync_busy_probe(&cfg, m, Path::new("/nonexistent"));
        let at = |a: &str| probe.iter().position(|x| x == a).unwrap();
        let include = at("--include=/Archive-Update-in-Progress-*");
        assert!(include < at("--exclude=/Archive-Update-in-Progress-*"));
        assert!(include < at("--exclude=/.syncgate-tmp"));
        assert_eq!(at("--exclude=*"), probe.len() - 3);
        assert!(probe.contains(&"--dry-run".to_string()));

        // With a change marker: one real transfer of the busy markers and
        // the marker's path, into the private probe directory.
        let dir = Path::new("/srv/.m.snapshots/.syncgate-tmp/probe");
        let probe = rsync_upstream_probe(&cfg, m, "project/trace/master", dir);
        let at = |a: &str| probe.iter().position(|x| x == a).unwrap();
        let last_include = at("--include=/project/trace/master");
        assert!(at("--include=/Archive-Update-in-Progress-*") < last_include);
        assert!(at("--include=/project/") < at("--include=/project/trace/"));
        assert!(last_include < at("--exclude=/.syncgate-tmp"));
        assert!(last_include < at("--exclude=*.tmp"));
        assert_eq!(at("--exclude=*"), probe.len() - 3);
        assert!(!probe.contains(&"--dry-run".to_string()));
        assert!(!probe.iter().any(|a| a.starts_with("--delete")));
        assert_eq!(
            probe.last().unwrap(),
            "/srv/.m.snapshots/.syncgate-tmp/probe/"
        );
    }

    #[test]
    fn the_passes_that_move_data_report_progress_and_the_dry_runs_do_not() {
        let cfg = config();
        let m = cfg.mirror("m").unwrap();
        let dest = Path::new("/srv/m");
        for argv in [
            rsync_fresh(&cfg, m),
            rsync_stage1(&cfg, m),
            rsync_stage2(&cfg, m),
            rsync_snapshot(&cfg, m, dest),
        ] {
            assert!(reports_progress(&argv), "{argv:?}");
            assert!(!is_plan(&argv), "{argv:?}");
        }
        for argv in [
            rsync_plan(&cfg, m),
            rsync_snapshot_plan(&cfg, m, dest, false),
            rsync_snapshot_plan(&cfg, m, dest, true),
            rsync_probe(&cfg, m),
        ] {
            assert!(!reports_progress(&argv), "{argv:?}");
            assert!(is_plan(&argv), "{argv:?}");
        }
        let busy = rsync_busy_probe(&cfg, m, dest);
        assert!(!reports_progress(&busy) && !is_plan(&busy), "{busy:?}");
    }

    #[test]
    fn only_stage_1_is_the_counting_pass() {
        let cfg = config();
        let m = cfg.mirror("m").unwrap();
        assert!(counts_deletions(&rsync_stage1(&cfg, m)));
        // max_delete = 0 from the config: stage 2's limit is real.
        for argv in [
            rsync_stage2(&cfg, m),
            rsync_plan(&cfg, m),
            rsync_fresh(&cfg, m),
        ] {
            assert!(!counts_deletions(&argv), "{argv:?}");
        }
        assert!(is_counting_noise(
            "rsync error: the --max-delete limit stopped deletions (code 25) at main.c(1394) [sender=3.5.0]"
        ));
        assert!(is_counting_noise(
            "Deletions stopped due to --max-delete limit (1 skipped)"
        ));
        assert!(!is_counting_noise(
            "rsync error: some files/attrs were not transferred (see previous errors) (code 23)"
        ));
    }
}
