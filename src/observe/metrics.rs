//! The Prometheus metrics file (`metrics_file`): every mirror's last run,
//! counters and freshness in the text exposition format, for
//! node_exporter's textfile collector. Replaced atomically (a temporary
//! file in the same directory, fsync, rename; mode 0644).
//!
//! [`Exposition`] is the format: declare a family (name, type, help) and
//! add samples to it by name; families render in the order they were
//! declared, each with its `# HELP` and `# TYPE` lines, labels escaped.
//! [`mirror_samples`] is one mirror's samples: a new per-mirror metric is
//! one `declare` in [`render`] and one `sample` there.

use std::path::Path;

use crate::admin::status::{MirrorStatus, StatusDoc};
use crate::error::Result;
use crate::hub::state::PushResult;
use crate::run::RunResult;

/// Every run result, as the `result` label says it.
pub const RESULTS: [RunResult; 6] = [
    RunResult::Success,
    RunResult::Failed,
    RunResult::Timeout,
    RunResult::Aborted,
    RunResult::Died,
    RunResult::VerifyFailed,
];

/// The `state` label of `syncgate_state` (as `status --json` says it).
pub const STATES: [&str; 3] = ["idle", "running", "stale"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: String,
}

/// A metrics file under construction.
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Exposition {
    /// Declares a metric family. Counters' names end in `_total`.
    pub fn declare(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        debug_assert!(self.families.iter().all(|f| f.name != name), "{name} twice");
        debug_assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
        self.families.push(Family {
            name,
            kind,
            help,
            samples: String::new(),
        });
    }

    /// Adds one sample to the declared family `name`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let f = self
            .families
            .iter_mut()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("metric family {name} is not declared"));
        f.samples.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
                .collect();
            f.samples.push('{');
            f.samples.push_str(&l.join(","));
            f.samples.push('}');
        }
        f.samples.push(' ');
        f.samples.push_str(&value.to_string());
        f.samples.push('\n');
    }

    /// The text: each family that has samples, with its HELP and TYPE.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
            out.push_str(&format!(
                "# HELP {} {help}\n# TYPE {} {}\n",
                f.name,
                f.name,
                f.kind.as_str()
            ));
            out.push_str(&f.samples);
        }
        out
    }
}

/// Declares syncgate's per-mirror families.
fn declare_mirror_families(x: &mut Exposition) {
    use Kind::{Counter, Gauge};
    let families: &[(&'static str, Kind, &'static str)] = &[
        ("syncgate_last_run_start_timestamp_seconds", Gauge, "When the mirror's last finished run started (Unix time)."),
        ("syncgate_last_run_end_timestamp_seconds", Gauge, "When the mirror's last finished run ended (Unix time)."),
        ("syncgate_last_run_duration_seconds", Gauge, "How long the mirror's last finished run took."),
        ("syncgate_last_run_result", Gauge, "1 for the result of the mirror's last finished run, 0 for the others."),
        ("syncgate_last_run_transferred_bytes", Gauge, "Bytes the mirror's last finished run transferred."),
        ("syncgate_last_run_transferred_files", Gauge, "Files the mirror's last finished run transferred."),
        ("syncgate_last_run_deleted_files", Gauge, "Entries the mirror's last finished run deleted."),
        ("syncgate_last_success_timestamp_seconds", Gauge, "When the mirror's last successful run ended (Unix time); absent before the first."),
        ("syncgate_runs_total", Counter, "Finished runs of the mirror by result (died: its process vanished)."),
        ("syncgate_requests_total", Counter, "Requests served for the mirror, coalesced ones included."),
        ("syncgate_consecutive_failures", Gauge, "Finished runs since the mirror's last success that did not succeed."),
        ("syncgate_typical_run_duration_seconds", Gauge, "Median duration of the mirror's recent successful runs."),
        ("syncgate_waiting_requests", Gauge, "Requests waiting for the mirror's lock when this file was written (counted while a run of some mirror is in progress)."),
        ("syncgate_running", Gauge, "1 while a run of the mirror holds its lock."),
        ("syncgate_state", Gauge, "1 for the mirror's state: idle, running, or stale (a run is recorded but its process is gone)."),
        ("syncgate_live_snapshot_info", Gauge, "The mirror's live snapshot (snapshot publishing), as a label."),
        ("syncgate_max_age_seconds", Gauge, "The mirror's max_age: its last success may be this old."),
        ("syncgate_fresh", Gauge, "1 when the mirror's last success is within max_age, 0 when it is older or there is none."),
        ("syncgate_pushing", Gauge, "1 while a push of the mirror to its downstreams is under way (a hub)."),
        ("syncgate_downstream_last_push_result", Gauge, "1 for the result of the last push to the downstream, 0 for the others."),
        ("syncgate_downstream_last_push_end_timestamp_seconds", Gauge, "When the last push to the downstream ended (Unix time)."),
        ("syncgate_downstream_last_push_duration_seconds", Gauge, "How long the last push to the downstream took."),
        ("syncgate_downstream_release", Gauge, "The hub's run id whose release the downstream last got in full."),
        ("syncgate_release", Gauge, "The hub's run id of its newest release (what its downstreams should have)."),
    ];
    for (name, kind, help) in families {
        x.declare(name, *kind, help);
    }
}

/// One mirror's samples (its families are declared by [`render`]).
pub fn mirror_samples(x: &mut Exposition, m: &MirrorStatus) {
    let l = [("mirror", m.name.as_str())];
    if let Some(r) = &m.last_run {
        x.sample(
            "syncgate_last_run_start_timestamp_seconds",
            &l,
            r.started as f64,
        );
        x.sample(
            "syncgate_last_run_end_timestamp_seconds",
            &l,
            r.ended as f64,
        );
        x.sample(
            "syncgate_last_run_duration_seconds",
            &l,
            r.ended.saturating_sub(r.started) as f64,
        );
        for res in RESULTS {
            let v = if r.result == res { 1.0 } else { 0.0 };
            x.sample(
                "syncgate_last_run_result",
                &[("mirror", &m.name), ("result", res.as_str())],
                v,
            );
        }
        x.sample("syncgate_last_run_transferred_bytes", &l, r.bytes as f64);
        x.sample("syncgate_last_run_transferred_files", &l, r.files as f64);
        x.sample("syncgate_last_run_deleted_files", &l, r.deleted as f64);
    }
    if let Some(s) = m.last_success {
        x.sample("syncgate_last_success_timestamp_seconds", &l, s as f64);
    }
    for res in RESULTS {
        let n = m.counts.runs.get(res.as_str()).copied().unwrap_or(0);
        x.sample(
            "syncgate_runs_total",
            &[("mirror", &m.name), ("result", res.as_str())],
            n as f64,
        );
    }
    x.sample("syncgate_requests_total", &l, m.counts.requests as f64);
    x.sample(
        "syncgate_consecutive_failures",
        &l,
        m.failures_in_row as f64,
    );
    if let Some(d) = m.typical_duration {
        x.sample("syncgate_typical_run_duration_seconds", &l, d as f64);
    }
    x.sample("syncgate_waiting_requests", &l, m.waiting as f64);
    x.sample(
        "syncgate_running",
        &l,
        if m.state == "running" { 1.0 } else { 0.0 },
    );
    for s in STATES {
        let v = if m.state == s { 1.0 } else { 0.0 };
        x.sample("syncgate_state", &[("mirror", &m.name), ("state", s)], v);
    }
    if let Some(snap) = &m.snapshot {
        x.sample(
            "syncgate_live_snapshot_info",
            &[("mirror", &m.name), ("snapshot", &snap.live)],
            1.0,
        );
    }
    if let Some(max) = m.max_age {
        x.sample("syncgate_max_age_seconds", &l, max as f64);
        let fresh = if m.freshness == "fresh" { 1.0 } else { 0.0 };
        x.sample("syncgate_fresh", &l, fresh);
    }
    downstream_samples(x, m);
}

/// A hub's samples: one set per downstream.
fn downstream_samples(x: &mut Exposition, m: &MirrorStatus) {
    if m.downstreams.is_empty() {
        return;
    }
    let l = [("mirror", m.name.as_str())];
    x.sample("syncgate_pushing", &l, if m.pushing { 1.0 } else { 0.0 });
    if let Some(r) = m.release {
        x.sample("syncgate_release", &l, r as f64);
    }
    for d in &m.downstreams {
        let dl = [("mirror", m.name.as_str()), ("downstream", d.name.as_str())];
        if let Some(p) = &d.last_push {
            for res in PUSH_RESULTS {
                let v = if p.result == res { 1.0 } else { 0.0 };
                x.sample(
                    "syncgate_downstream_last_push_result",
                    &[
                        ("mirror", m.name.as_str()),
                        ("downstream", d.name.as_str()),
                        ("result", res.as_str()),
                    ],
                    v,
                );
            }
            x.sample(
                "syncgate_downstream_last_push_end_timestamp_seconds",
                &dl,
                p.ended as f64,
            );
            x.sample(
                "syncgate_downstream_last_push_duration_seconds",
                &dl,
                p.ended.saturating_sub(p.started) as f64,
            );
        }
        if let Some(r) = d.release {
            x.sample("syncgate_downstream_release", &dl, r as f64);
        }
    }
}

/// Every push result, as the `result` label says it.
pub const PUSH_RESULTS: [PushResult; 5] = [
    PushResult::Success,
    PushResult::Triggered,
    PushResult::Failed,
    PushResult::Timeout,
    PushResult::Aborted,
];

/// The whole metrics file for `doc`.
pub fn render(doc: &StatusDoc) -> String {
    let mut x = Exposition::default();
    x.declare(
        "syncgate_metrics_timestamp_seconds",
        Kind::Gauge,
        "When syncgate wrote this file (Unix time).",
    );
    declare_mirror_families(&mut x);
    x.sample(
        "syncgate_metrics_timestamp_seconds",
        &[],
        doc.generated as f64,
    );
    for m in &doc.mirrors {
        mirror_samples(&mut x, m);
    }
    x.text()
}

/// Replaces `path` with the metrics of `doc` ([`super::file::replace`]:
/// its directory must exist).
pub fn write(path: &Path, doc: &StatusDoc) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    super::file::replace(
        dir,
        &name,
        render(doc).as_bytes(),
        "its directory must exist and be writable by the user syncgate runs as",
    )
    .map_err(|e| crate::error::Error::Internal(format!("metrics_file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::status::MirrorStatus;
    use crate::error::Exit;
    use crate::run::{Outcome, RunRecord, Snapshots, Stage, Trigger};

    fn mirror(name: &str) -> MirrorStatus {
        MirrorStatus::blank(name)
    }

    fn doc(mirrors: Vec<MirrorStatus>) -> StatusDoc {
        StatusDoc {
            version: 1,
            generated: 1_795_255_600,
            mirrors,
        }
    }

    #[test]
    fn a_mirror_that_never_ran_has_counters_at_zero_and_no_last_run() {
        let text = render(&doc(vec![mirror("iso")]));
        assert!(text.starts_with(
            "# HELP syncgate_metrics_timestamp_seconds When syncgate wrote this file (Unix time).\n\
             # TYPE syncgate_metrics_timestamp_seconds gauge\n\
             syncgate_metrics_timestamp_seconds 1795255600\n"
        ));
        assert!(text.contains("# TYPE syncgate_runs_total counter\n"));
        assert!(text.contains("syncgate_runs_total{mirror=\"iso\",result=\"verify-failed\"} 0\n"));
        assert!(text.contains("syncgate_state{mirror=\"iso\",state=\"idle\"} 1\n"));
        assert!(!text.contains("syncgate_last_run_"), "{text}");
        assert!(!text.contains("syncgate_fresh"), "{text}");
        assert!(!text.contains("syncgate_last_success"), "{text}");
    }

    #[test]
    fn the_last_run_counts_and_freshness_are_samples_of_their_families() {
        let mut m = mirror("debian-cd");
        m.last_run = Some(RunRecord {
            run: 7,
            trigger: Trigger::Ssh,
            request: "r1".into(),
            requester: "key=jenkins".into(),
            started: 1_795_255_500,
            ended: 1_795_255_542,
            outcome: Outcome {
                exit_code: Exit::SyncFailed,
                ..Outcome::failed(RunResult::Timeout, "timed out".into(), Some(20))
            },
            served: 3,
            stage: Stage::All,
        });
        m.last_success = Some(1_795_000_000);
        m.counts.runs.insert("success".into(), 5);
        m.counts.runs.insert("timeout".into(), 1);
        m.counts.requests = 9;
        m.failures_in_row = 1;
        m.max_age = Some(7200);
        m.freshness = "stale";
        m.snapshot = Some(Snapshots {
            live: "20261203T021530Z".into(),
            kept: vec![],
            switched: true,
        });
        let text = render(&doc(vec![m, mirror("b")]));
        for want in [
            "syncgate_last_run_duration_seconds{mirror=\"debian-cd\"} 42\n",
            "syncgate_last_run_result{mirror=\"debian-cd\",result=\"timeout\"} 1\n",
            "syncgate_last_run_result{mirror=\"debian-cd\",result=\"success\"} 0\n",
            "syncgate_runs_total{mirror=\"debian-cd\",result=\"success\"} 5\n",
            "syncgate_runs_total{mirror=\"debian-cd\",result=\"timeout\"} 1\n",
            "syncgate_requests_total{mirror=\"debian-cd\"} 9\n",
            "syncgate_consecutive_failures{mirror=\"debian-cd\"} 1\n",
            "syncgate_last_success_timestamp_seconds{mirror=\"debian-cd\"} 1795000000\n",
            "syncgate_live_snapshot_info{mirror=\"debian-cd\",snapshot=\"20261203T021530Z\"} 1\n",
            "syncgate_max_age_seconds{mirror=\"debian-cd\"} 7200\n",
            "syncgate_fresh{mirror=\"debian-cd\"} 0\n",
        ] {
            assert!(text.contains(want), "{want}in\n{text}");
        }
        // One HELP and one TYPE per family, the samples of both mirrors under it.
        assert_eq!(text.matches("# TYPE syncgate_runs_total ").count(), 1);
        let family: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "# TYPE syncgate_requests_total counter")
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(
            family,
            [
                "syncgate_requests_total{mirror=\"debian-cd\"} 9",
                "syncgate_requests_total{mirror=\"b\"} 0"
            ]
        );
    }

    #[test]
    fn a_hub_has_one_set_of_samples_per_downstream() {
        use crate::admin::status::DownstreamStatus;
        use crate::hub::state::{PushRecord, PushResult};
        assert!(!render(&doc(vec![mirror("iso")])).contains("downstream"));
        let mut m = mirror("iso");
        m.release = Some(9);
        m.pushing = true;
        let ds = |name: &str, push: Option<PushRecord>, release| DownstreamStatus {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 22,
            mode: "all",
            kind: "syncgate",
            age: None,
            last_push: push,
            release,
        };
        m.downstreams = vec![
            ds(
                "cache1",
                Some(PushRecord {
                    run: 9,
                    stage: "all".into(),
                    started: 100,
                    ended: 103,
                    result: PushResult::Timeout,
                    exit: None,
                    message: String::new(),
                }),
                Some(8),
            ),
            ds("new", None, None),
        ];
        let text = render(&doc(vec![m]));
        for want in [
            "syncgate_pushing{mirror=\"iso\"} 1\n",
            "syncgate_release{mirror=\"iso\"} 9\n",
            "syncgate_downstream_last_push_result{mirror=\"iso\",downstream=\"cache1\",result=\"timeout\"} 1\n",
            "syncgate_downstream_last_push_result{mirror=\"iso\",downstream=\"cache1\",result=\"success\"} 0\n",
            "syncgate_downstream_last_push_end_timestamp_seconds{mirror=\"iso\",downstream=\"cache1\"} 103\n",
            "syncgate_downstream_last_push_duration_seconds{mirror=\"iso\",downstream=\"cache1\"} 3\n",
            "syncgate_downstream_release{mirror=\"iso\",downstream=\"cache1\"} 8\n",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(
            !text.contains("downstream=\"new\""),
            "never pushed: no samples\n{text}"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut x = Exposition::default();
        x.declare("t_info", Kind::Gauge, "a \\ b\nc");
        x.sample("t_info", &[("v", "a\"b\\c\nd")], 1.0);
        assert_eq!(
            x.text(),
            "# HELP t_info a \\\\ b\\nc\n# TYPE t_info gauge\nt_info{v=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn the_file_is_replaced_whole_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("syncgate.prom");
        std::fs::write(&p, "old").unwrap();
        write(&p, &doc(vec![mirror("iso")])).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("syncgate_requests_total{mirror=\"iso\"} 0\n"));
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        let e = write(&d.path().join("missing/x.prom"), &doc(vec![])).unwrap_err();
        assert!(e.to_string().contains("must exist"), "{e}");
    }
}
