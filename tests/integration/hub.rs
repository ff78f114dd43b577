//! The hub (issue 13) end to end: a syncgate hub pushes downstream mirrors
//! in parallel, each a host of its own in the namespace (see
//! `support::hub`): syncgate downstreams, a real Debian `ftpsync`
//! receiver, and bad ones (throttled, connection refused, hanging). Every
//! pull goes through a real `rsync --daemon` serving the hub's published
//! snapshot; every push through the real sshd of the downstream.
//!
//! `harness_*` prove the network without the hub code (the test pushes each
//! downstream with the exact ssh argv of the hub contract); the others need
//! the hub (`[hub]`, `[mirror.M.downstream.*]`, `cascade`).

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::support::hub::{push_events, tree, tree_diff, Hub, Site, HUB_KEY, ISO};
use crate::support::mirror_host::MirrorHost;
use crate::support::{bytes, e2e_test, opts, procs, run_ok, show, stderr, Mirrors, SyslogReceiver};

/// Bound for anything that should take seconds.
const SLOW: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- helpers

/// The hub's upstream gets a small release: an image, a directory, and the
/// checksum file (the "last file" of a release) over every file upstream
/// (so put big files first).
fn release(mh: &MirrorHost, tag: &str) {
    let image = format!("image {tag}\n");
    mh.put(ISO, "a.iso", image.as_bytes());
    mh.put(ISO, "sub/b.txt", format!("b {tag}\n").as_bytes());
    let up = mh.upstream_dir(ISO);
    let files: Vec<String> = tree(&up, |r| r == "SHA256SUMS").into_keys().collect();
    let sums = run_ok(
        std::process::Command::new("sha256sum")
            .current_dir(&up)
            .args(&files),
    );
    mh.put(ISO, "SHA256SUMS", sums.as_bytes());
}

/// The builder's `ssh … sync iso` on the hub (jenkins key); returns its
/// output and how long it took.
fn builder_sync(hub: &Hub) -> (std::process::Output, Duration) {
    let t0 = Instant::now();
    let out = hub
        .mh
        .ssh_command(Some("sync iso"))
        .output()
        .expect("run builder ssh");
    (out, t0.elapsed())
}

/// Paths ftpsync adds to its own tree (trace files, its lock files).
fn ftpsync_own(rel: &str) -> bool {
    rel.starts_with("project/trace") || rel.starts_with("Archive-Update-")
}

/// The hub's published tree.
fn hub_tree(hub: &Hub) -> BTreeMap<String, Vec<u8>> {
    tree(&hub.mh.dest(ISO), |_| false)
}

/// `site`'s dest holds exactly the hub's published tree.
#[track_caller]
fn assert_same_release(hub: &Hub, site: &Site) {
    let want = hub_tree(hub);
    assert!(
        !want.is_empty(),
        "the hub published nothing\n{}",
        hub.story()
    );
    let got = tree(&site.dest(ISO), |_| false);
    let diff = tree_diff(&want, &got);
    assert!(
        diff.is_empty(),
        "site {} does not hold the hub's release: {diff:?}\n{}",
        site.label,
        hub.story()
    );
}

/// The hub's push-end lines for `label`.
fn ends(log: &SyslogReceiver, label: &str) -> Vec<BTreeMap<String, String>> {
    push_events(log)
        .into_iter()
        .filter(|f| {
            f["event"] == "push-end" && f.get("downstream").map(String::as_str) == Some(label)
        })
        .collect()
}

/// `status --json` of the hub's mirror iso, run by root on the hub.
fn status_json(hub: &Hub) -> serde_json::Value {
    let out = hub.mh.syncgate().args(["status", "--json"]).status(0).run();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", show(&out)));
    doc["mirrors"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == ISO).cloned())
        .unwrap_or_else(|| panic!("no mirror iso in {doc:#}"))
}

/// The `downstreams` entry `label` of the hub's `status --json`.
#[track_caller]
fn status_of(hub: &Hub, label: &str) -> serde_json::Value {
    let m = status_json(hub);
    m["downstreams"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == label).cloned())
        .unwrap_or_else(|| {
            panic!(
                "no downstream {label} in status --json: {m:#}\n{}",
                hub.story()
            )
        })
}

/// The last finished run id of the hub's mirror.
fn hub_run(hub: &Hub) -> u64 {
    hub.mh.last_run(ISO)["run"].as_u64().expect("run id")
}

/// Every request the downstream served came from the hub's key.
#[track_caller]
fn assert_pushed_by_hub(site: &Site, hub: &Hub) {
    let decisions = site.log.events("decision");
    assert!(
        !decisions.is_empty(),
        "site {} got no request\n{}",
        site.label,
        hub.story()
    );
    for d in &decisions {
        assert_eq!(d.get("key").map(String::as_str), Some(HUB_KEY), "{d:?}");
        assert_eq!(
            d.get("decision").map(String::as_str),
            Some("allow"),
            "{d:?}\n{}",
            hub.story()
        );
    }
}

/// A watcher that polls logs (and anything else) every few milliseconds in
/// a scoped thread and records when each line first appeared.
#[derive(Default)]
struct Timeline {
    /// (seconds since t0, source, line).
    seen: Mutex<Vec<(f64, String, String)>>,
}

impl Timeline {
    /// Counts that make [`Timeline::poll`] ignore the lines already there.
    fn skip_existing(logs: &[(&str, &SyslogReceiver)]) -> BTreeMap<String, usize> {
        logs.iter()
            .map(|(n, l)| ((*n).to_string(), l.lines().len()))
            .collect()
    }

    fn poll(
        &self,
        t0: Instant,
        logs: &[(&str, &SyslogReceiver)],
        counts: &mut BTreeMap<String, usize>,
    ) {
        // One stamp per pass: lines of several logs read in one pass are
        // simultaneous here, whatever order the logs are read in.
        let now = t0.elapsed().as_secs_f64();
        for (name, log) in logs {
            let lines = log.lines();
            let n = counts.entry((*name).to_string()).or_default();
            let mut seen = self.seen.lock().unwrap();
            for l in &lines[*n..] {
                seen.push((now, (*name).to_string(), l.clone()));
            }
            *n = lines.len();
        }
    }

    /// When the first line of `source` with `event=EVENT` and every
    /// `key=value` of `having` appeared (seconds since t0).
    fn first(&self, source: &str, event: &str, having: &[(&str, &str)]) -> Option<f64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, s, l)| {
                let f = crate::support::fields(l);
                s == source
                    && f.get("event").map(String::as_str) == Some(event)
                    && having
                        .iter()
                        .all(|(k, v)| f.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(t, _, _)| *t)
    }
}

/// No ssh of the hub and no rsync or gate of `sites` is left (waits up to
/// `grace` for them to end).
#[track_caller]
fn assert_nothing_left(hub: &Hub, grace: Duration) {
    assert_nothing_left_but(hub, grace, &[]);
}

/// [`assert_nothing_left`] not looking at the sites labelled `skip`.
#[track_caller]
fn assert_nothing_left_but(hub: &Hub, grace: Duration, skip: &[&str]) {
    let left = || {
        let mut pids = hub.ssh_pids();
        for s in hub
            .sites
            .iter()
            .filter(|s| !skip.contains(&s.label.as_str()))
        {
            pids.extend(procs::ours(procs::pids_of_user(s.login.uid)));
            pids.extend(procs::ours(procs::pids_of_user(s.owner.uid)));
        }
        for f in &hub.ftpsync {
            pids.extend(procs::ours(procs::pids_of_user(f.user.uid)));
        }
        pids
    };
    let deadline = Instant::now() + grace;
    while !left().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = left();
    let detail: String = pids
        .iter()
        .map(|p| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map_or("", |x| x.1).to_string();
            let f: Vec<&str> = after.split(' ').collect();
            let uid = fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .unwrap_or("")
                .to_string();
            format!(
                "  {p}: state {} ppid {} pgrp {} sid {} {uid}\n",
                f.first().unwrap_or(&"?"),
                f.get(1).unwrap_or(&"?"),
                f.get(2).unwrap_or(&"?"),
                f.get(3).unwrap_or(&"?")
            )
        })
        .collect();
    assert!(
        pids.is_empty(),
        "processes left behind {grace:?} after the pushes:\n{}\n{detail}\n{}",
        procs::describe_pids(&pids),
        hub.story()
    );
}

// ---------------------------------------------------------------- harness

e2e_test! {
    /// The network works without the hub code: the hub publishes, then the
    /// test pushes each downstream with the contract's ssh argv as the
    /// hub's login account (its key, strict host keys from its
    /// known_hosts); each syncgate site serves it as a request of
    /// `[key.hub]` and ends with the hub's release, the ftpsync receiver
    /// too; the dead one is refused at once and the hanging one never gets
    /// past the banner.
    fn harness_downstreams_take_a_push_with_the_contract_argv() {
        let mut hub = Hub::new(opts());
        for label in ["cache1", "cache2"] {
            hub.add_site(label, "all", 60, opts());
        }
        hub.add_site("stage", "staged", 60, opts());
        hub.add_ftpsync("deb", "all", 60);
        hub.add_dead("dead", 5);
        hub.add_hang("hang", 5);
        release(&hub.mh, "v1");
        let (out, took) = builder_sync(&hub);
        assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
        eprintln!("hub publish: {took:.2?}");

        for label in ["cache1", "cache2"] {
            let t0 = Instant::now();
            let out = hub.push_direct(label, "sync:archive:iso sync:all");
            assert_eq!(out.status.code(), Some(0), "{label}: {}\n{}", show(&out), hub.story());
            eprintln!("push {label} (all): {:.2?}", t0.elapsed());
            assert_same_release(&hub, hub.site(label));
            assert_pushed_by_hub(hub.site(label), &hub);
        }
        // staged: stage 1 leaves the live tree alone, stage 2 publishes.
        let out = hub.push_direct("stage", "sync:archive:iso sync:stage1");
        assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
        assert!(hub.site("stage").read("SHA256SUMS").is_none(), "stage 1 published\n{}", hub.story());
        let out = hub.push_direct("stage", "sync:archive:iso sync:stage2");
        assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
        assert_same_release(&hub, hub.site("stage"));

        // ftpsync: it answers when it is done here (20180513 keeps the
        // channel open on fd 4); completion is its trace file.
        let since = SystemTime::now() - Duration::from_secs(1);
        let t0 = Instant::now();
        let out = hub.push_direct("deb", "sync:archive:iso sync:all");
        eprintln!("push deb (ftpsync): exit {:?} after {:.2?}", out.status.code(), t0.elapsed());
        assert_ne!(out.status.code(), Some(255), "{}\n{}", show(&out), hub.story());
        let f = &hub.ftpsync[0];
        f.wait_done(since, SLOW);
        let got = tree(&f.dest, ftpsync_own);
        let diff = tree_diff(&hub_tree(&hub), &got);
        assert!(diff.is_empty(), "ftpsync: {diff:?}\n{}", hub.story());

        let t0 = Instant::now();
        let out = hub.push_direct("dead", "sync:archive:iso sync:all");
        assert_eq!(out.status.code(), Some(255), "{}", show(&out));
        assert!(t0.elapsed() < Duration::from_secs(5), "refused took {:?}", t0.elapsed());
        let t0 = Instant::now();
        let out = hub.push_direct("hang", "sync:archive:iso sync:all");
        assert_eq!(out.status.code(), Some(255), "{}", show(&out));
        eprintln!("hanging downstream: ssh gave up after {:.2?}: {}", t0.elapsed(), stderr(&out).trim());
        assert_nothing_left(&hub, Duration::from_secs(10));
    }
}

// ------------------------------------------------------------------ hub

e2e_test! {
    /// `all` mode with cascade = "wait": one builder sync on the hub ends
    /// with three syncgate downstreams on the hub's release when it
    /// returns, and the ftpsync receiver there shortly after; audited and
    /// shown in status.
    fn all_mode_three_syncgate_sites_and_ftpsync_get_the_release() {
        let mut hub = Hub::new(opts().cascade("wait"));
        for label in ["cache1", "cache2", "cache3"] {
            hub.add_site(label, "all", 60, opts());
        }
        hub.add_ftpsync("deb", "all", 60);
        hub.enable(None);
        release(&hub.mh, "v1");
        let since = SystemTime::now() - Duration::from_secs(1);
        let (out, took) = builder_sync(&hub);
        eprintln!("builder sync with 4 downstreams (wait): {took:.2?}");
        assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
        for label in ["cache1", "cache2", "cache3"] {
            assert_same_release(&hub, hub.site(label));
            assert_pushed_by_hub(hub.site(label), &hub);
            let e = ends(&hub.mh.log, label);
            assert_eq!(e.len(), 1, "{label}: {e:?}\n{}", hub.story());
            assert_eq!(e[0]["result"], "success", "{}", hub.story());
            assert_eq!(e[0]["stage"], "all");
        }
        let f = &hub.ftpsync[0];
        let waited = f.wait_done(since, SLOW);
        eprintln!("ftpsync done {waited:.2?} after the builder returned");
        let diff = tree_diff(&hub_tree(&hub), &tree(&f.dest, ftpsync_own));
        assert!(diff.is_empty(), "ftpsync: {diff:?}\n{}", hub.story());
        let e = ends(&hub.mh.log, "deb");
        assert_eq!(e.len(), 1, "{e:?}\n{}", hub.story());
        assert_eq!(e[0]["result"], "triggered", "{}", hub.story());

        let run = hub_run(&hub);
        for label in ["cache1", "cache2", "cache3", "deb"] {
            let d = status_of(&hub, label);
            assert_eq!(d["last_push"]["result"], if label == "deb" { "triggered" } else { "success" }, "{d:#}");
            assert_eq!(d["mode"], "all", "{d:#}");
            assert_eq!(d["release"], run, "{d:#}");
        }
        let text = hub.mh.syncgate().arg("status").status(0).run();
        let text = format!("{}{}", String::from_utf8_lossy(&text.stdout), String::from_utf8_lossy(&text.stderr));
        for label in ["cache1", "cache2", "cache3", "deb"] {
            assert!(text.contains(label), "text status lacks {label}:\n{text}");
        }
        assert_nothing_left(&hub, Duration::from_secs(10));
    }
}

e2e_test! {
    /// `staged`: no downstream shows the new checksum file before every
    /// downstream finished stage 1 (one is throttled so stage 1 ends at
    /// very different times). Watched by a reader polling every
    /// downstream's dest, and by the order of the hub's audit lines.
    fn staged_no_site_shows_the_new_last_file_before_all_finished_stage1() {
        let mut hub = Hub::new(opts().cascade("wait").push_delay(120));
        hub.add_site("fast1", "staged", 60, opts());
        hub.add_site("fast2", "staged", 60, opts());
        // 512 KiB at 256 KiB/s: stage 1 takes ~2 s here, ~0.1 s elsewhere.
        hub.add_site("slow", "staged", 60, opts().bwlimit(256));
        hub.enable(None);
        hub.mh.put(ISO, "big.bin", &bytes(512 * 1024, 7));
        release(&hub.mh, "v1");
        let labels = ["fast1", "fast2", "slow"];
        let stop = AtomicBool::new(false);
        let tl = Timeline::default();
        let t0 = Instant::now();
        let early = Mutex::new(Vec::<String>::new());
        let (out, took) = std::thread::scope(|s| {
            s.spawn(|| {
                let mut counts = BTreeMap::new();
                while !stop.load(Ordering::SeqCst) {
                    // Dest first, then the hub's log: a new file seen
                    // while fewer than all stage-1 ends were logged *after*
                    // it is certainly too early.
                    let shown: Vec<&str> = labels
                        .iter()
                        .copied()
                        .filter(|l| hub.site(l).read("SHA256SUMS").is_some())
                        .collect();
                    tl.poll(t0, &[("hub", &hub.mh.log)], &mut counts);
                    let stage1_done = push_events(&hub.mh.log)
                        .iter()
                        .filter(|f| f["event"] == "push-end" && f["stage"] == "stage1")
                        .count();
                    if !shown.is_empty() && stage1_done < labels.len() {
                        early.lock().unwrap().push(format!(
                            "{:.3}s: {shown:?} show SHA256SUMS, {stage1_done} stage-1 pushes ended",
                            t0.elapsed().as_secs_f64()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let r = builder_sync(&hub);
            stop.store(true, Ordering::SeqCst);
            r
        });
        eprintln!("staged push to 3 downstreams (one throttled): builder {took:.2?}");
        assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
        let early = early.into_inner().unwrap();
        assert!(early.is_empty(), "new last file shown before every stage 1 ended: {early:?}\n{}", hub.story());

        let events = push_events(&hub.mh.log);
        let pos = |ev: &str, stage: &str| -> Vec<usize> {
            events
                .iter()
                .enumerate()
                .filter(|(_, f)| f["event"] == ev && f["stage"] == stage)
                .map(|(i, _)| i)
                .collect()
        };
        let (s1_end, s2_start) = (pos("push-end", "stage1"), pos("push-start", "stage2"));
        assert_eq!(s1_end.len(), 3, "{events:?}\n{}", hub.story());
        assert_eq!(s2_start.len(), 3, "{events:?}\n{}", hub.story());
        assert!(
            s1_end.iter().max() < s2_start.iter().min(),
            "a stage 2 started before every stage 1 ended: {events:#?}"
        );
        for label in labels {
            assert_same_release(&hub, hub.site(label));
            let e = ends(&hub.mh.log, label);
            assert!(e.iter().all(|f| f["result"] == "success"), "{e:?}\n{}", hub.story());
        }
        let slow_end = tl.first("hub", "push-end", &[("downstream", "slow"), ("stage", "stage1")]);
        let fast_end = tl.first("hub", "push-end", &[("downstream", "fast1"), ("stage", "stage1")]);
        eprintln!("stage 1 ended: fast1 at {fast_end:?} s, slow at {slow_end:?} s");
    }
}

e2e_test! {
    /// `mhop` across three tiers: hub → mid (a syncgate hub itself, with
    /// its own downstream) → leaf, for a first release and a second one:
    /// the hub's stage 1 to mid returns only after mid pushed the leaf's
    /// stage 1 and it ended, the leaf gets runmirrors' mhop words in order,
    /// and everyone ends with the hub's release each time. (With snapshot
    /// publishing at mid, the leaf's stage 1 finds mid's old release live,
    /// so its stage 2 carries the new one; the test prints the counts.)
    fn mhop_three_tiers_hub_mid_leaf() {
        let mut hub = Hub::new(opts().cascade("wait").push_delay(120));
        hub.add_site("mid", "mhop", 120, opts().cascade("wait").push_delay(120));
        let bin = hub.mh.bin.clone();
        {
            let mid = hub.sites.iter_mut().find(|s| s.label == "mid").unwrap();
            mid.serve();
        }
        let mid_url = hub.site("mid").url();
        let leaf = Site::new(&mut hub.mh.host, "leaf", &mid_url, &bin, opts());
        let table = hub.site("mid").pusher.as_ref().unwrap().link(&leaf, "mhop", 60);
        {
            let mid = hub.sites.iter_mut().find(|s| s.label == "mid").unwrap();
            mid.enable(vec![table]);
        }
        hub.sites.push(leaf);
        hub.enable(None);

        for round in ["v1", "v2"] {
            release(&hub.mh, round);
            let leaf_before = hub.site("leaf").log.events("decision").len();
            let stop = AtomicBool::new(false);
            let tl = Timeline::default();
            let t0 = Instant::now();
            let (out, took) = std::thread::scope(|s| {
                s.spawn(|| {
                    let logs = [
                        ("hub", &hub.mh.log),
                        ("mid", &hub.site("mid").log),
                        ("leaf", &hub.site("leaf").log),
                    ];
                    let mut counts = Timeline::skip_existing(&logs);
                    while !stop.load(Ordering::SeqCst) {
                        tl.poll(t0, &logs, &mut counts);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                });
                let r = builder_sync(&hub);
                std::thread::sleep(Duration::from_millis(200));
                stop.store(true, Ordering::SeqCst);
                r
            });
            eprintln!("{round}: mhop over three tiers: builder {took:.2?}");
            assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
            // cascade = "wait" at both tiers: done when the builder returns.
            for label in ["mid", "leaf"] {
                assert_same_release(&hub, hub.site(label));
            }
            let cmds = |site: &str, from: usize| -> Vec<String> {
                hub.site(site).log.events("decision")[from..]
                    .iter()
                    .map(|d| d["command"].trim().to_string())
                    .collect()
            };
            let mid_from = if round == "v1" { 0 } else { 2 };
            assert_eq!(
                cmds("mid", mid_from),
                ["sync:archive:iso sync:mhop sync:stage1", "sync:archive:iso sync:mhop sync:stage2"],
                "{round}: mid, pushed by the hub\n{}",
                hub.story()
            );
            let leaf_cmds = cmds("leaf", leaf_before);
            eprintln!("{round}: leaf got {leaf_cmds:?}");
            for o in &hub.site("leaf").outcomes()[leaf_before..] {
                eprintln!(
                    "{round}: leaf run {} files={} bytes={} result={}",
                    o["run"], o["files"], o["bytes"], o["result"]
                );
            }
            assert_eq!(
                leaf_cmds,
                ["sync:archive:iso sync:mhop sync:stage1", "sync:archive:iso sync:mhop sync:stage2"],
                "{round}: leaf, pushed by mid\n{}",
                hub.story()
            );
            let leaf_s1 = tl.first("mid", "push-end", &[("downstream", "leaf"), ("stage", "stage1")]);
            let mid_s1 = tl.first("hub", "push-end", &[("downstream", "mid"), ("stage", "stage1")]);
            let mid_s2 = tl.first("hub", "push-start", &[("downstream", "mid"), ("stage", "stage2")]);
            eprintln!("{round}: leaf stage 1 end {leaf_s1:?}, mid stage 1 end {mid_s1:?}, mid stage 2 start {mid_s2:?}");
            let (leaf_s1, mid_s1, mid_s2) = (
                leaf_s1.unwrap_or_else(|| panic!("mid never pushed the leaf's stage 1\n{}", hub.story())),
                mid_s1.unwrap_or_else(|| panic!("no stage-1 end for mid\n{}", hub.story())),
                mid_s2.unwrap_or_else(|| panic!("no stage-2 start for mid\n{}", hub.story())),
            );
            // Each site's syslog receiver is its own thread: under load the
            // mid's line (sent before mid answered the hub) can be stored a
            // little after the hub's. A mid that answered without waiting
            // would be at least the leaf's whole stage 1 (≥ 0.3 s) early.
            assert!(
                leaf_s1 <= mid_s1 + 0.1,
                "the hub's stage 1 to mid returned before the leaf's stage 1 ended\n{}",
                hub.story()
            );
            assert!(mid_s1 <= mid_s2, "{}", hub.story());
        }
        assert_nothing_left(&hub, Duration::from_secs(15));
    }
}

e2e_test! {
    /// A throttled, a dead (refused) and a hanging downstream next to two
    /// fast ones: the fast ones finish well before the slow one's timeout,
    /// the slow one is killed at its limit, every failure is in the audit
    /// trail and in `status --json`, and no ssh or rsync is left behind.
    fn slow_dead_and_hanging_downstreams_do_not_delay_the_fast_ones() {
        const LIMIT: u64 = 10;
        const SITE_LIMIT: u64 = 15;
        let mut hub = Hub::new(opts().cascade("wait"));
        hub.add_site("fast1", "all", 60, opts());
        hub.add_site("fast2", "all", 60, opts());
        // 1 MiB at 4 KiB/s: minutes, far past its 10 s limit. A run goes
        // on when its client goes away (other requests may be coalesced on
        // it; see RELIABILITY.md): the site's own wall clock ends it.
        hub.add_site("slow", "all", LIMIT, opts().bwlimit(4).timeout(SITE_LIMIT));
        hub.add_dead("dead", LIMIT);
        hub.add_hang("hang", LIMIT);
        hub.enable(None);
        hub.mh.put(ISO, "big.bin", &bytes(1024 * 1024, 3));
        release(&hub.mh, "v1");

        let stop = AtomicBool::new(false);
        let tl = Timeline::default();
        let t0 = Instant::now();
        let (out, took) = std::thread::scope(|s| {
            s.spawn(|| {
                let mut counts = BTreeMap::new();
                while !stop.load(Ordering::SeqCst) {
                    tl.poll(t0, &[("hub", &hub.mh.log)], &mut counts);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let r = builder_sync(&hub);
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::SeqCst);
            r
        });
        eprintln!("builder with slow/dead/hanging downstreams: {took:.2?}");
        // require = 0: the local release counts.
        assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
        let local = tl.first("hub", "push-start", &[("downstream", "fast1")]).expect("fast1 pushed");
        for label in ["fast1", "fast2"] {
            let end = tl
                .first("hub", "push-end", &[("downstream", label), ("result", "success")])
                .unwrap_or_else(|| panic!("{label} did not succeed\n{}", hub.story()));
            eprintln!("{label}: done {:.2} s after the pushes started", end - local);
            assert!(
                end - local < LIMIT as f64 / 2.0,
                "{label} took {:.2} s, not well below the slow one's {LIMIT} s\n{}",
                end - local,
                hub.story()
            );
            assert_same_release(&hub, hub.site(label));
        }
        let slow = ends(&hub.mh.log, "slow");
        assert_eq!(slow.len(), 1, "{slow:?}\n{}", hub.story());
        assert_eq!(slow[0]["result"], "timeout", "{}", hub.story());
        let d: f64 = slow[0]["duration"].parse().unwrap();
        assert!(
            (LIMIT as f64 - 0.5..LIMIT as f64 + 5.0).contains(&d),
            "slow push lasted {d} s, its limit is {LIMIT} s"
        );
        assert!(took < Duration::from_secs(LIMIT + 10), "builder waited {took:?}: not the slow one's limit");
        let dead = ends(&hub.mh.log, "dead");
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["result"], "failed", "{}", hub.story());
        assert_eq!(dead[0]["exit"], "255", "{}", hub.story());
        let hang = ends(&hub.mh.log, "hang");
        assert_eq!(hang.len(), 1, "{hang:?}");
        assert!(matches!(hang[0]["result"].as_str(), "timeout" | "failed"), "{hang:?}");

        for (label, want) in [("fast1", "success"), ("fast2", "success"), ("slow", "timeout"), ("dead", "failed")] {
            let st = status_of(&hub, label);
            assert_eq!(st["last_push"]["result"], want, "{label}: {st:#}");
        }
        assert_ne!(status_of(&hub, "hang")["last_push"]["result"], "success");
        assert_ne!(status_of(&hub, "slow")["release"], hub_run(&hub), "the slow one never got it");
        // The hub's ssh processes are gone when the builder returns.
        assert!(hub.ssh_pids().is_empty(), "ssh left behind: {}", procs::describe_pids(&hub.ssh_pids()));
        // The slow site's run ends at its own limit.
        let o = hub.site("slow").log.wait_events("outcome", 1, SLOW);
        assert_eq!(o[0]["result"], "timeout", "{o:?}\n{}", hub.story());
        eprintln!("slow site: its own run ended after {:.2?}: {}", t0.elapsed(), o[0]["message"]);
        // Its rsync: see a_timed_out_slow_pull_leaves_no_rsync_on_the_downstream.
        assert_nothing_left_but(&hub, Duration::from_secs(10), &["slow"]);
    }
}

e2e_test! {
    /// A burst of builder requests during a fan-out (cascade = "detach"):
    /// the builders return after the local publish, pushes for the mirror
    /// never overlap per downstream, every pull sees one whole release
    /// (the hub switches snapshots while downstreams pull: every downstream
    /// run succeeds, none fails verification), and every downstream ends
    /// with the last publish.
    fn burst_during_fanout_pushes_never_overlap_and_the_last_publish_wins() {
        // keep = 10: a pull holds on to the snapshot it started in (the
        // daemon chroots into it), and the hub prunes all but `keep`; with
        // the default 2, five publishes during the slow site's pull delete
        // its snapshot under it (rsync exit 24, verify-failed downstream,
        // caught up by the next push). A hub's `keep` must cover the
        // publishes that can happen during its slowest downstream's pull.
        let mut hub = Hub::new(opts().cascade("detach").keep(10));
        hub.add_site("a", "all", 60, opts());
        hub.add_site("b", "all", 60, opts());
        // Slow enough that later publishes arrive during its push.
        hub.add_site("c", "all", 60, opts().bwlimit(512));
        hub.enable(None);
        hub.mh.put(ISO, "big.bin", &bytes(1024 * 1024, 5));
        // Five releases, one after the other (a builder publishes, then
        // builds the next); each answered by a burst of three concurrent
        // requests, while the pushes of the previous ones are running.
        let mut builders = Vec::new();
        for i in 1..=5 {
            release(&hub.mh, &format!("v{i}"));
            let burst: Vec<_> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..3).map(|_| s.spawn(|| builder_sync(&hub))).collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (out, took) in burst {
                assert_eq!(out.status.code(), Some(0), "builder {i}: {}\n{}", show(&out), hub.story());
                builders.push(took);
            }
        }
        eprintln!("builder times (detach): {builders:.2?}");
        let want = hub_tree(&hub);
        let all_done = || {
            hub.sites.iter().all(|s| tree(&s.dest(ISO), |_| false) == want) && {
                let ev = hub.push_events();
                let starts = ev.iter().filter(|f| f["event"] == "push-start").count();
                let ends = ev.iter().filter(|f| f["event"] == "push-end").count();
                starts == ends
            }
        };
        crate::support::wait_until(SLOW, all_done)
            .unwrap_or_else(|| panic!("downstreams never all got the last publish\n{}", hub.story()));
        // Let a straggling push show up if there were one.
        std::thread::sleep(Duration::from_secs(2));
        let ev = hub.push_events();
        for s in &hub.sites {
            let mine: Vec<&str> = ev
                .iter()
                .filter(|f| f.get("downstream") == Some(&s.label))
                .map(|f| f["event"].as_str())
                .collect();
            eprintln!("{}: {} pushes", s.label, mine.len() / 2);
            assert!(!mine.is_empty(), "{} never pushed\n{}", s.label, hub.story());
            for (i, e) in mine.iter().enumerate() {
                let want = if i % 2 == 0 { "push-start" } else { "push-end" };
                assert_eq!(*e, want, "pushes to {} overlap: {mine:?}\n{}", s.label, hub.story());
            }
            assert!(mine.len() / 2 <= 5, "more pushes than publishes to {}: {mine:?}", s.label);
            // Each pull saw one whole release, although the hub switched
            // snapshots during the pushes: no verification failed.
            for o in s.outcomes() {
                assert_eq!(o["result"], "success", "{}: {o:?}\n{}", s.label, hub.story());
            }
            assert_same_release(&hub, s);
        }
        assert_nothing_left(&hub, Duration::from_secs(15));
    }
}

e2e_test! {
    /// Config errors of the hub tables: a group-readable push key, an
    /// unknown key in a downstream table, a bad host → exit 78 naming file,
    /// line and key (loaded by the account that pushes).
    fn hub_config_errors_name_file_line_and_key() {
        let mut hub = Hub::new(opts());
        hub.add_site("cache1", "all", 60, opts());
        hub.enable(None);
        let cfg = hub.mh.config.clone();
        let text = fs::read_to_string(&cfg).unwrap();
        let line_of = |text: &str, needle: &str| {
            text.lines()
                .position(|l| l.starts_with(needle))
                .map(|i| i + 1)
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
        };
        let run_status = |what: &str| -> String {
            let out = hub
                .mh
                .host
                .run_as(&hub.mh.login.name, &[hub.mh.bin.to_str().unwrap(), "--config", cfg.to_str().unwrap(), "status"]);
            assert_eq!(out.status.code(), Some(78), "{what}: {}", show(&out));
            let err = stderr(&out);
            eprintln!("{what}: {}", err.trim());
            err
        };
        // A sane config loads.
        let out = hub.mh.host.run_as(&hub.mh.login.name, &[hub.mh.bin.to_str().unwrap(), "--config", cfg.to_str().unwrap(), "status"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));

        // 1. group-readable key file.
        let key = hub.table("cache1").key.clone();
        crate::support::host::set_mode(&key, 0o640);
        let err = run_status("group-readable key");
        let line = line_of(&text, "key = ");
        assert!(err.contains(&format!("{}:{line}:", cfg.display())), "{err}");
        assert!(err.contains(": mirror.iso.downstream.cache1.key: "), "{err}");
        assert!(err.contains(&key.display().to_string()), "{err}");
        crate::support::host::set_mode(&key, 0o600);

        // 2. unknown key in a downstream table.
        let bad = text.replace("kind = \"syncgate\"", "kind = \"syncgate\"\nhots = \"x\"");
        fs::write(&cfg, &bad).unwrap();
        let err = run_status("unknown downstream key");
        let line = line_of(&bad, "hots = ");
        assert!(err.contains(&format!("{}:{line}:", cfg.display())), "{err}");
        assert!(err.contains("unknown field `hots`"), "{err}");

        // 3. a host that is neither a hostname nor an address.
        let bad = text.replace("host = \"127.0.0.1\"", "host = \"-oProxyCommand=sh\"");
        fs::write(&cfg, &bad).unwrap();
        let err = run_status("bad host");
        let line = line_of(&bad, "host = ");
        assert!(err.contains(&format!("{}:{line}:", cfg.display())), "{err}");
        assert!(err.contains(": mirror.iso.downstream.cache1.host: "), "{err}");
        fs::write(&cfg, &text).unwrap();
    }
}

e2e_test! {
    /// The downstream side of a push that timed out: the site's own run
    /// hits its wall clock (`timeout`) while pulling slowly from the hub's
    /// rsync daemon, and nothing of it (gate, owner side, rsync) may be left.
    /// rsync's forked receiver used to survive the main rsync (it got only
    /// the SIGTERM); the owner side now kills the group when it lingers.
    fn a_timed_out_slow_pull_leaves_no_rsync_on_the_downstream() {
        let mut hub = Hub::new(opts().cascade("wait"));
        hub.add_site("slow", "all", 5, opts().bwlimit(4).timeout(10));
        hub.enable(None);
        hub.mh.put(ISO, "big.bin", &bytes(1024 * 1024, 3));
        release(&hub.mh, "v1");
        let (out, took) = builder_sync(&hub);
        eprintln!("builder: {took:.2?}");
        assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), hub.story());
        let o = hub.site("slow").log.wait_events("outcome", 1, SLOW);
        assert_eq!(o[0]["result"], "timeout", "{o:?}\n{}", hub.story());
        eprintln!("slow site: {}", o[0]["message"]);
        assert_nothing_left(&hub, Duration::from_secs(10));
    }
}

// ------------------------------------------------------------------ bench

/// Median and min–max of `v`, formatted with `unit`.
fn spread(v: &[f64], unit: &str) -> String {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    format!(
        "{med:.2} {unit} ({:.2}–{:.2})",
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN)
    )
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

/// The hub's processes (its login account's, in this namespace) and the
/// sum of their resident memory (KiB).
fn hub_footprint(hub: &Hub) -> (usize, u64) {
    let pids = procs::ours(procs::pids_of_user(hub.mh.login.uid));
    let rss = pids
        .iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum();
    (pids.len(), rss)
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// One measured publish: the builder's `sync iso` with cascade = "wait",
/// while a watcher records the hub's push lines and footprint.
struct Round {
    /// Seconds from the first push-start to each downstream's push-end.
    ends: BTreeMap<String, f64>,
    /// Each downstream's own push duration (seconds, from the audit line).
    durations: BTreeMap<String, f64>,
    peak_procs: usize,
    peak_rss_kib: u64,
    /// Share of the machine's CPU time that was busy during the round.
    cpu_busy: f64,
}

fn measured_round(hub: &Hub, tag: &str, seed: u64) -> Round {
    hub.mh.put(ISO, "big.bin", &bytes(64 * 1024, seed));
    release(&hub.mh, tag);
    let stop = AtomicBool::new(false);
    let tl = Timeline::default();
    let peak = Mutex::new((0usize, 0u64));
    let cpu0 = cpu_jiffies();
    let t0 = Instant::now();
    let (out, _) = std::thread::scope(|s| {
        s.spawn(|| {
            let logs = [("hub", &hub.mh.log)];
            let mut counts = Timeline::skip_existing(&logs);
            while !stop.load(Ordering::SeqCst) {
                tl.poll(t0, &logs, &mut counts);
                let (n, rss) = hub_footprint(hub);
                let mut p = peak.lock().unwrap();
                *p = (p.0.max(n), p.1.max(rss));
                drop(p);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let r = builder_sync(hub);
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::SeqCst);
        r
    });
    let cpu1 = cpu_jiffies();
    let cpu_busy = (cpu1.0 - cpu0.0) as f64 / (cpu1.1 - cpu0.1).max(1) as f64;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        show(&out),
        hub.story()
    );
    let seen = tl.seen.into_inner().unwrap();
    let lines: Vec<(f64, BTreeMap<String, String>)> = seen
        .iter()
        .map(|(t, _, l)| (*t, crate::support::fields(l)))
        .collect();
    let first = lines
        .iter()
        .find(|(_, f)| f.get("event").map(String::as_str) == Some("push-start"))
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("{tag}: no push\n{}", hub.story()));
    let mut ends = BTreeMap::new();
    let mut durations = BTreeMap::new();
    for (t, f) in &lines {
        if f.get("event").map(String::as_str) == Some("push-end") {
            assert_eq!(f["result"], "success", "{tag}: {f:?}\n{}", hub.story());
            ends.insert(f["downstream"].clone(), t - first);
            durations.insert(
                f["downstream"].clone(),
                f["duration"].parse().unwrap_or(f64::NAN),
            );
        }
    }
    let (peak_procs, peak_rss_kib) = peak.into_inner().unwrap();
    Round {
        ends,
        durations,
        peak_procs,
        peak_rss_kib,
        cpu_busy,
    }
}

e2e_test! {
    /// bench/fanout.sh's measurement (not a test): a hub with N downstreams
    /// (BENCH_DOWNSTREAMS, default 20; tiny trees), one of them throttled
    /// (`bwlimit`, 64 KiB per release), max_parallel BENCH_MAX_PARALLEL
    /// (default N). Interleaved rounds (one warmup, then BENCH_RUNS, default
    /// 5): a single push (only one fast downstream configured) and the
    /// fan-out to all N. Prints a Markdown table.
    #[ignore = "benchmark: run bench/fanout.sh"]
    fn bench_fanout() {
        let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let n = env("BENCH_DOWNSTREAMS", 20).max(2) as usize;
        let runs = env("BENCH_RUNS", 5).max(3) as usize;
        let max_parallel = env("BENCH_MAX_PARALLEL", n as u64);
        let slow_bwlimit = env("BENCH_SLOW_BWLIMIT", 16);
        let t = Instant::now();
        let mut hub = Hub::new(opts().cascade("wait"));
        for i in 1..n {
            hub.add_site(&format!("f{i:02}"), "all", 300, opts());
        }
        hub.add_site("slow", "all", 300, opts().bwlimit(slow_bwlimit));
        // BENCH_RECEIVER=null: each downstream's key runs `true` (the slow
        // one `sleep`) instead of syncgate: the hub's and ssh's cost alone.
        let null = std::env::var("BENCH_RECEIVER").is_ok_and(|v| v == "null");
        if null {
            for site in &hub.sites {
                let public = fs::read_to_string(hub.table(&site.label).key.with_extension("pub")).unwrap();
                let cmd = if site.label == "slow" { "/bin/sleep 4" } else { "/bin/true" };
                hub.mh.host.authorize(&site.login.name, &[(public.trim(), &format!("restrict,command=\"{cmd}\""))]);
            }
        }
        eprintln!("set-up of {n} downstreams ({}): {:.1?}", if null { "null receivers" } else { "syncgate" }, t.elapsed());
        let all = hub.downstreams.clone();
        let single = vec![all[0].clone()];
        let configure = |hub: &mut Hub, ds: &[crate::support::config::DownstreamTable]| {
            hub.downstreams = ds.to_vec();
            hub.enable(Some(max_parallel));
        };
        let (mut one, mut fast, mut total, mut slow, mut sum, mut procs_peak, mut rss_peak) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut busy = vec![];
        for r in 0..=runs {
            configure(&mut hub, &single);
            let a = measured_round(&hub, &format!("single{r}"), 2 * r as u64 + 1);
            configure(&mut hub, &all);
            let b = measured_round(&hub, &format!("fanout{r}"), 2 * r as u64 + 2);
            let fast_done = b
                .ends
                .iter()
                .filter(|(k, _)| k.as_str() != "slow")
                .map(|(_, v)| *v)
                .fold(0.0, f64::max);
            assert_eq!(
                b.ends.len(),
                n,
                "round {r}: not every downstream was pushed: {:?}\n--- hub audit trail ---\n{}",
                b.ends,
                hub.mh.log.lines().join("\n")
            );
            let line = format!(
                "round {r}{}: single {:.2} s; fan-out: {} fast done {:.2} s, all {:.2} s, slow {:.2} s, sum {:.1} s, peak {} procs {:.1} MiB, CPU {:.0} % busy",
                if r == 0 { " (warmup)" } else { "" },
                a.durations.values().sum::<f64>(),
                n - 1,
                fast_done,
                b.ends.values().fold(0.0, |x: f64, y| x.max(*y)),
                b.durations["slow"],
                b.durations.values().sum::<f64>(),
                b.peak_procs,
                b.peak_rss_kib as f64 / 1024.0,
                b.cpu_busy * 100.0
            );
            eprintln!("{line}");
            if r == 0 {
                continue;
            }
            one.push(a.durations.values().sum::<f64>());
            busy.push(b.cpu_busy * 100.0);
            fast.push(fast_done);
            total.push(b.ends.values().fold(0.0, |x: f64, y| x.max(*y)));
            slow.push(b.durations["slow"]);
            sum.push(b.durations.values().sum::<f64>());
            procs_peak.push(b.peak_procs as f64);
            rss_peak.push(b.peak_rss_kib as f64 / 1024.0);
        }
        let ratio: Vec<f64> = fast.iter().zip(&one).map(|(f, o)| f / o).collect();
        let over: Vec<f64> = total.iter().zip(&slow).map(|(t, s)| t / s).collect();
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        println!(
            "\n| fan-out to {n} {} downstreams ({} fast, 1 {}), max_parallel {max_parallel}, {runs} rounds | median (min–max) | target | |",
            if null { "null (`command=\"true\"`)" } else { "syncgate" },
            n - 1,
            if null { "sleeping 4 s".to_string() } else { format!("at bwlimit {slow_bwlimit} KiB/s") }
        );
        println!("|---|---|---|---|");
        println!("| single push (1 downstream configured): its audit duration | {} | | |", spread(&one, "s"));
        println!("| fan-out: all {} fast ones done (from the first push-start) | {} | | |", n - 1, spread(&fast, "s"));
        println!("| ratio fast-done / single | {} | ≤ 1.5× | {} |", spread(&ratio, "×"), verdict(median(&ratio) <= 1.5));
        println!("| fan-out: last push done | {} | | |", spread(&total, "s"));
        println!("| the slow one's own push (audit duration) | {} | | |", spread(&slow, "s"));
        println!("| last done / slow one's | {} | ≈ 1× (not the sum) | {} |", spread(&over, "×"), verdict(median(&over) <= 1.1));
        println!("| sum of all push durations (what a serial hub would take) | {} | | |", spread(&sum, "s"));
        println!("| hub peak processes (login account: gate, ssh) | {} | info | |", spread(&procs_peak, ""));
        println!("| hub peak RSS sum | {} | info | |", spread(&rss_peak, "MiB"));
        println!("| machine CPU busy during the fan-out (2 cores, downstreams included) | {} | info | |", spread(&busy, "%"));
    }
}
