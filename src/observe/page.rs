//! The status page: after every served request, the process that served it
//! (the login account for SSH requests and the systemd timer, or whoever
//! ran `syncgate sync`) writes `index.html` and `status.json` into the
//! directory `status_page` names. No daemon: the page is as fresh as the
//! last request.
//!
//! `status.json` is exactly what `syncgate status --json` prints; the page
//! is one static HTML document rendered from the same collection
//! ([`crate::admin::status`]) plus each mirror's run history (for the
//! chart): no JavaScript, no external assets, inline CSS that reads on a
//! phone. Everything taken from the state (mirror names, rsync's messages,
//! requesters) is HTML-escaped.
//!
//! Each file is replaced atomically ([`super::file::replace`]).

use std::fmt::Write as _;
use std::path::Path;

use super::file::replace;
use crate::admin::status::{self, MirrorStatus, StatusDoc};
use crate::error::{Error, Result};
use crate::run::{RunRecord, RunResult};
use crate::sys::progress::{human_bytes, human_secs};
use crate::sys::timefmt::iso;

/// Said when a file cannot be created in `status_page`.
const HINT: &str = "is status_page writable by this account?";

/// The page's file names in `status_page`.
pub const HTML: &str = "index.html";
pub const JSON: &str = "status.json";

/// How many of a mirror's last runs the chart shows.
pub const CHART_RUNS: usize = 30;

/// Writes `index.html` and `status.json` of `doc` into `dir` (the
/// config's `status_page`).
pub fn write(dir: &Path, doc: &StatusDoc) -> Result<()> {
    check_dir(dir)?;
    replace(dir, JSON, status::to_json(doc).as_bytes(), HINT)?;
    replace(dir, HTML, render(doc).as_bytes(), HINT)
}

fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(Error::Internal(format!(
            "status_page {} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Internal(format!(
            "status_page {0} does not exist: create it, writable by the account that runs syncgate (the login account) and readable by the web server (e.g. install -d -o syncgate -g syncgate -m 0755 {0})",
            dir.display()
        ))),
        Err(e) => Err(Error::io(format!("status_page {}", dir.display()), e)),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--card:#f6f8fa;--line:#d0d7de;--mut:#57606a;--ok:#1a7f37;--bad:#cf222e;--run:#9a6700}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--card:#161b22;--line:#30363d;--mut:#8d96a0;--ok:#3fb950;--bad:#f85149;--run:#d29922}}
*{box-sizing:border-box}
body{margin:0;padding:1rem;background:var(--bg);color:var(--fg);font:16px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif}
main{max-width:75rem;margin:0 auto}
h1{font-size:1.4rem;margin:0}
.sum{margin:.25rem 0 1rem;color:var(--mut)}
.grid{display:grid;gap:1rem;grid-template-columns:repeat(auto-fill,minmax(min(100%,22rem),1fr))}
section{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.75rem 1rem;min-width:0}
h2{font-size:1.15rem;margin:0 0 .5rem;display:flex;flex-wrap:wrap;gap:.25rem .5rem;align-items:baseline;overflow-wrap:anywhere}
.b{font-size:.8rem;font-weight:600;padding:0 .5rem;border:1px solid currentColor;border-radius:1rem;white-space:nowrap}
.ok{color:var(--ok)}.bad{color:var(--bad)}.run{color:var(--run)}.mut{color:var(--mut)}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15rem .75rem;margin:0}
dt{color:var(--mut)}dd{margin:0;min-width:0;overflow-wrap:anywhere}
figure{margin:.75rem 0 0}
svg{display:block;width:100%;height:auto}
.sb{fill:var(--ok)}.fb{fill:none;stroke:var(--bad);stroke-width:1.5;stroke-dasharray:2 1.5}.fx{stroke:var(--bad);stroke-width:1.5}.base{stroke:var(--line)}
figcaption{font-size:.8rem;color:var(--mut)}
footer{margin-top:1rem;font-size:.85rem;color:var(--mut);overflow-wrap:anywhere}
a{color:inherit}
";

/// The whole page.
pub fn render(doc: &StatusDoc) -> String {
    let mut h = String::with_capacity(4096 + 2048 * doc.mirrors.len());
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str("<title>Mirror status</title>\n<style>\n");
    h.push_str(STYLE);
    h.push_str("</style>\n</head>\n<body>\n<main>\n<h1>Mirror status</h1>\n");
    let ok = doc
        .mirrors
        .iter()
        .filter(|m| {
            m.last_run
                .as_ref()
                .is_some_and(|r| r.result == RunResult::Success)
        })
        .count();
    let never = doc.mirrors.iter().filter(|m| m.last_run.is_none()).count();
    let failing = doc.mirrors.len() - ok - never;
    let _ = writeln!(
        h,
        "<p class=\"sum\">{} mirror{}: {ok} last synced successfully, {failing} failing, {never} never synced.</p>",
        doc.mirrors.len(),
        if doc.mirrors.len() == 1 { "" } else { "s" }
    );
    h.push_str("<div class=\"grid\">\n");
    for (i, m) in doc.mirrors.iter().enumerate() {
        mirror(&mut h, i, m, doc.generated);
    }
    h.push_str("</div>\n");
    let _ = writeln!(
        h,
        "<footer>Generated {} (UTC) by syncgate after a request; the page changes only when a request is served. Machine-readable: <a href=\"{JSON}\">{JSON}</a>.</footer>",
        iso(doc.generated)
    );
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn ago(t: u64, at: u64) -> String {
    format!("{} ({} ago)", iso(at), human_secs(t.saturating_sub(at)))
}

fn row(h: &mut String, term: &str, def: &str) {
    let _ = writeln!(h, "<dt>{term}</dt><dd>{def}</dd>");
}

fn mirror(h: &mut String, i: usize, m: &MirrorStatus, t: u64) {
    let runs = &m.runs;
    let name = esc(&m.name);
    let _ = writeln!(h, "<section id=\"m-{name}\">");
    let (class, state) = match (&m.running, m.state) {
        (Some(r), "running") => ("run", format!("running run #{}", r.run)),
        (Some(r), _) => ("bad", format!("run #{} died", r.run)),
        _ => ("mut", "idle".to_string()),
    };
    let result = match &m.last_run {
        Some(r) if r.result == RunResult::Success => ("ok", "✓ last run succeeded".to_string()),
        Some(r) => ("bad", format!("✗ last run {}", r.result.as_str())),
        None => ("mut", "never synced".to_string()),
    };
    let _ = writeln!(
        h,
        "<h2><span>{name}</span> <span class=\"b {class}\">{}</span> <span class=\"b {}\">{}</span></h2>",
        esc(&state),
        result.0,
        esc(&result.1)
    );
    h.push_str("<dl>\n");
    let detail = match (&m.running, m.state) {
        // The trigger only: the requester names a key and a client address,
        // which a public page does not show.
        (Some(r), "running") => format!(
            "running run #{} since {}, started by {}",
            r.run,
            ago(t, r.started),
            r.trigger
        ),
        (Some(r), _) => format!(
            "run #{} (pid {}) died; the next request records it",
            r.run, r.pid
        ),
        _ => "idle".into(),
    };
    row(h, "State", &esc(&detail));
    if m.waiting > 0 {
        row(h, "Waiting", &format!("{} request(s)", m.waiting));
    }
    match &m.last_run {
        Some(r) => {
            let mut s = format!("run #{} {}", r.run, r.result.as_str());
            if !r.message.is_empty() {
                s.push_str(": ");
                s.push_str(&r.message);
            }
            // rsync's code, unless the message already says it.
            if let Some(c) = r
                .rsync_exit
                .filter(|c| *c != 0 && !r.message.contains(&format!("rsync exited {c}")))
            {
                s.push_str(&format!(
                    " [rsync exit {c}: {}]",
                    crate::owner::rsync::describe(c)
                ));
            }
            row(
                h,
                "Last result",
                &format!("<span class=\"{}\">{}</span>", result.0, esc(&s)),
            );
            row(h, "Last run ended", &esc(&ago(t, r.ended)));
            row(
                h,
                "Took",
                &esc(&human_secs(r.ended.saturating_sub(r.started))),
            );
            if r.result == RunResult::Success {
                row(
                    h,
                    "Transferred",
                    &esc(&format!(
                        "{} files, {}, {} deleted",
                        r.files,
                        human_bytes(r.bytes),
                        r.deleted
                    )),
                );
            }
        }
        None => row(h, "Last result", "never synced"),
    }
    let last_ok = match m.last_success {
        Some(s) => ago(t, s),
        None => "never".into(),
    };
    row(h, "Last success", &esc(&last_ok));
    if let Some(max) = m.max_age {
        let (class, word) = match m.freshness {
            "fresh" => ("ok", "fresh"),
            "never" => ("bad", "OUT OF DATE: never synced"),
            _ => ("bad", "OUT OF DATE"),
        };
        row(
            h,
            "Freshness",
            &format!(
                "<span class=\"{class}\">{}</span>",
                esc(&format!("{word} (max_age {})", human_secs(max)))
            ),
        );
    }
    if let Some(r) = runs.iter().rev().find(|r| r.size.is_some()) {
        let size = r.size.unwrap_or(0);
        row(
            h,
            "Size",
            &esc(&format!("{} (as of run #{})", human_bytes(size), r.run)),
        );
    }
    if let Some(s) = &m.snapshot {
        row(h, "Live snapshot", &esc(&s.live));
    }
    // A hub: how each downstream's last push went (not its address).
    if m.pushing {
        row(h, "Pushing", "a push downstream is under way");
    }
    for d in &m.downstreams {
        let last = match &d.last_push {
            Some(p) => format!(
                "{} for release #{}, {}",
                p.result.as_str(),
                p.run,
                ago(t, p.ended)
            ),
            None => "never pushed".into(),
        };
        row(h, &format!("Push to {}", esc(&d.name)), &esc(&last));
    }
    if let Some(w) = &m.warning {
        row(
            h,
            "Warning",
            &format!("<span class=\"bad\">{}</span>", esc(w)),
        );
    }
    h.push_str("</dl>\n");
    chart(h, i, runs);
    h.push_str("</section>\n");
}

/// The durations of the last [`CHART_RUNS`] runs as bars, oldest left:
/// a success is a solid bar, anything else a hollow dashed bar with a ×
/// above it (not told apart by colour alone); the caption says the same in
/// words.
pub fn chart(h: &mut String, i: usize, runs: &[RunRecord]) {
    let shown = &runs[runs.len().saturating_sub(CHART_RUNS)..];
    if shown.is_empty() {
        h.push_str("<p class=\"mut\">No runs yet.</p>\n");
        return;
    }
    let took = |r: &RunRecord| r.ended.saturating_sub(r.started);
    let longest = shown.iter().map(took).max().unwrap_or(0);
    let failed = shown
        .iter()
        .filter(|r| r.result != RunResult::Success)
        .count();
    let caption = format!(
        "Duration of the last {} run{}, oldest first: {} succeeded (solid bars), {failed} did not (hollow bars marked ×); longest {}.",
        shown.len(),
        if shown.len() == 1 { "" } else { "s" },
        shown.len() - failed,
        human_secs(longest)
    );
    let _ = writeln!(
        h,
        "<figure><svg viewBox=\"0 0 300 60\" role=\"img\" aria-labelledby=\"c{i}\">"
    );
    h.push_str("<line class=\"base\" x1=\"0\" y1=\"59.5\" x2=\"300\" y2=\"59.5\"/>\n");
    let first_slot = CHART_RUNS - shown.len();
    for (k, r) in shown.iter().enumerate() {
        let x = (first_slot + k) as f64 * 10.0 + 1.5;
        let hgt = 3.0 + 45.0 * took(r) as f64 / longest.max(1) as f64;
        let y = 59.0 - hgt;
        let _ = write!(
            h,
            "<g><title>{}</title>",
            esc(&format!(
                "run #{}: {}, took {}, ended {}",
                r.run,
                r.result.as_str(),
                human_secs(took(r)),
                iso(r.ended)
            ))
        );
        if r.result == RunResult::Success {
            let _ = write!(
                h,
                "<rect class=\"sb\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"7\" height=\"{hgt:.1}\"/>"
            );
        } else {
            let _ = write!(
                h,
                "<rect class=\"fb\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"7\" height=\"{hgt:.1}\"/><path class=\"fx\" d=\"M{x:.1} {:.1}l7 7m0 -7l-7 7\"/>",
                y - 9.0
            );
        }
        h.push_str("</g>\n");
    }
    let _ = writeln!(
        h,
        "</svg><figcaption id=\"c{i}\">{}</figcaption></figure>",
        esc(&caption)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Outcome, Running, Trigger};

    fn rec(run: u64, result: RunResult, took: u64, message: &str) -> RunRecord {
        let outcome = if result == RunResult::Success {
            let mut o = Outcome::success(message.into(), Some(0), 2048, 3, 1);
            o.size = Some(5 << 30);
            o
        } else {
            Outcome::failed(result, message.into(), Some(23))
        };
        RunRecord {
            run,
            trigger: Trigger::Timer,
            request: format!("r{run}"),
            requester: "user=syncgate".into(),
            started: 1_795_255_100 + run * 1000,
            ended: 1_795_255_100 + run * 1000 + took,
            outcome,
            served: 1,
            stage: Default::default(),
        }
    }

    fn status(
        name: &str,
        runs: &[RunRecord],
        running: Option<(&'static str, u64)>,
    ) -> MirrorStatus {
        MirrorStatus {
            name: name.into(),
            state: running.map_or("idle", |r| r.0),
            running: running.map(|(_, run)| Running {
                run,
                pid: 4242,
                trigger: Trigger::Ssh,
                request: "r".into(),
                requester: "key=jenkins client=192.0.2.7:5123".into(),
                started: 1_795_300_000,
                stage: Default::default(),
            }),
            last_run: runs.last().cloned(),
            last_success: runs
                .iter()
                .rev()
                .find(|r| r.result == RunResult::Success)
                .map(|r| r.ended),
            runs: runs.to_vec(),
            ..MirrorStatus::blank(name)
        }
    }

    fn page(mirrors: Vec<MirrorStatus>) -> String {
        render(&StatusDoc {
            version: 1,
            generated: 1_795_300_100,
            mirrors,
        })
    }

    #[test]
    fn text_from_the_state_is_escaped() {
        assert_eq!(
            esc("<script>alert(\"x\" & 'y')</script>\u{1b}[31m"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;\u{fffd}[31m"
        );
        let hostile = "rsync: [sender] send_files failed to open \"/up/<script>alert(1)</script>\": Permission denied (13)";
        let runs = vec![rec(1, RunResult::Failed, 5, hostile)];
        let mut m = status("iso", &runs, None);
        m.warning = Some("<img src=x onerror=alert(2)>".into());
        let html = page(vec![m]);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
    }

    #[test]
    fn the_page_is_self_contained_and_made_for_phones() {
        let runs = vec![rec(1, RunResult::Success, 60, "transferred")];
        let html = page(vec![status("iso", &runs, None)]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html
            .contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
        assert!(!html.to_ascii_lowercase().contains("<script"));
        for external in ["src=", "<link", "@import", "url(", "http://", "https://"] {
            assert!(!html.contains(external), "{external} in {html}");
        }
        assert!(html.contains("Generated 2026-11-21T"));
        assert!(html.contains("href=\"status.json\""));
    }

    #[test]
    fn each_mirror_shows_its_state_result_success_size_and_duration() {
        let ok = vec![
            rec(1, RunResult::Failed, 3, "rsync exited 23"),
            rec(2, RunResult::Success, 130, "transferred"),
        ];
        let bad = vec![rec(1, RunResult::Timeout, 7200, "timed out after 2h00m")];
        let html = page(vec![
            status("debian", &ok, Some(("running", 3))),
            status("iso", &bad, Some(("stale", 2))),
            status("new", &[], None),
        ]);
        assert!(html.contains("3 mirrors: 1 last synced successfully, 1 failing, 1 never synced."));
        assert!(html.contains("running run #3"));
        assert!(html.contains("started by ssh"));
        assert!(!html.contains("192.0.2.7"), "no client address on the page");
        assert!(html.contains("run #2 success: transferred"));
        assert!(html.contains("<dt>Took</dt><dd>2m10s</dd>"));
        assert!(html.contains("<dt>Size</dt><dd>5.0 GiB (as of run #2)</dd>"));
        assert!(html.contains("<dt>Transferred</dt><dd>3 files, 2.0 KiB, 1 deleted</dd>"));
        assert!(html.contains("run #2 died"));
        assert!(html.contains("run #1 timeout: timed out after 2h00m [rsync exit 23"));
        assert!(html.contains("<dt>Last success</dt><dd>never</dd>"));
        assert!(!html.contains("Freshness"), "no max_age: not watched");
        assert!(html.contains("No runs yet."));
        assert!(!html.contains("Push to"), "no downstreams, no push rows");
    }

    #[test]
    fn a_hubs_downstream_pushes_are_listed_without_their_address() {
        use crate::admin::status::DownstreamStatus;
        use crate::hub::state::{PushRecord, PushResult};
        let runs = vec![rec(1, RunResult::Success, 60, "transferred")];
        let mut m = status("debian", &runs, None);
        m.pushing = true;
        m.downstreams = vec![
            DownstreamStatus {
                name: "leaf<1>".into(),
                host: "10.1.2.3".into(),
                port: 22,
                mode: "wait",
                kind: "push",
                last_push: Some(PushRecord {
                    run: 1,
                    stage: "all".into(),
                    started: 1_795_300_000,
                    ended: 1_795_300_040,
                    result: PushResult::Failed,
                    exit: Some(255),
                    message: "ssh: connect refused".into(),
                }),
                age: Some(60),
                release: None,
            },
            DownstreamStatus {
                name: "leaf2".into(),
                host: "10.1.2.4".into(),
                port: 22,
                mode: "wait",
                kind: "push",
                last_push: None,
                age: None,
                release: None,
            },
        ];
        let html = page(vec![m]);
        assert!(html.contains("<dt>Pushing</dt><dd>a push downstream is under way</dd>"));
        assert!(html
            .contains("<dt>Push to leaf&lt;1&gt;</dt><dd>failed for release #1, 2026-11-21T22:"));
        assert!(html.contains("<dt>Push to leaf2</dt><dd>never pushed</dd>"));
        assert!(
            !html.contains("10.1.2."),
            "no downstream address on the page"
        );
    }

    fn bars(runs: &[RunRecord]) -> String {
        let mut h = String::new();
        chart(&mut h, 0, runs);
        h
    }

    #[test]
    fn the_chart_with_no_runs_is_a_sentence() {
        let h = bars(&[]);
        assert_eq!(h, "<p class=\"mut\">No runs yet.</p>\n");
    }

    #[test]
    fn the_chart_with_one_run_is_one_full_height_bar_on_the_right() {
        let h = bars(&[rec(1, RunResult::Success, 42, "")]);
        assert_eq!(h.matches("<rect").count(), 1);
        assert!(
            h.contains("x=\"291.5\" y=\"11.0\" width=\"7\" height=\"48.0\""),
            "{h}"
        );
        assert!(h.contains("<title>run #1: success, took 42s, ended "));
        assert!(h.contains("Duration of the last 1 run, oldest first: 1 succeeded (solid bars), 0 did not (hollow bars marked ×); longest 42s."));
        assert!(h.contains("aria-labelledby=\"c0\""));
        assert!(h.contains("<figcaption id=\"c0\">"));
    }

    #[test]
    fn the_chart_with_many_runs_shows_the_last_thirty_and_marks_failures_by_shape() {
        let runs: Vec<RunRecord> = (1..=45)
            .map(|n| {
                let result = if n % 10 == 0 {
                    RunResult::Failed
                } else {
                    RunResult::Success
                };
                rec(n, result, n * 2, "")
            })
            .collect();
        let h = bars(&runs);
        assert_eq!(h.matches("<rect").count(), CHART_RUNS);
        assert!(!h.contains("run #15:"));
        assert!(h.contains("run #16:") && h.contains("run #45:"));
        // Runs 20, 30 and 40 failed: hollow dashed bars with a cross.
        assert_eq!(h.matches("class=\"fb\"").count(), 3);
        assert_eq!(h.matches("class=\"fx\"").count(), 3);
        assert_eq!(h.matches("class=\"sb\"").count(), 27);
        assert!(h.contains("27 succeeded (solid bars), 3 did not"));
        assert!(h.contains("longest 1m30s"));
        // Every bar stays inside the view box.
        for part in h.split("height=\"").skip(1) {
            let v: f64 = part.split('"').next().unwrap().parse().unwrap();
            assert!((3.0..=48.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn a_missing_directory_says_how_to_make_it() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_dir(&d.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("does not exist: create it"));
    }
}
