//! Entering the private namespace.
//!
//! An end-to-end test runs twice. The *outer* run (a normal `cargo test`
//! process on the real machine) re-executes the test binary for just that
//! one test under `unshare --mount --net --propagation private`, with
//! `SYNCGATE_E2E_NS=1`. The *inner* run does the real work as root: it may
//! add users, mount over `/etc`, start sshd; all of that dies with the
//! namespace. Back outside, the outer run checks that the machine is exactly
//! as before (accounts, sudoers, no surviving process from the namespace, no
//! leftover workspace) and fails the test otherwise.
//!
//! Outer runs hold an exclusive `flock` on /tmp (machine-wide), so namespace
//! children never overlap: users created in parallel namespaces would get the
//! same uids, and uid-based process scans would then see each other.
//!
//! ```ignore
//! e2e_test! {
//!     /// Doc comments and attributes are kept.
//!     fn my_test() {
//!         let mut host = Host::new();
//!         // ...
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::procs;

/// Set (to "1") in the environment of the inner run.
pub const NS_ENV: &str = "SYNCGATE_E2E_NS";
/// Prefix for the inner run's temporary directories, set by the outer run.
pub const TAG_ENV: &str = "SYNCGATE_E2E_TAG";
/// The outer run's own namespaces, which the inner run must not share.
pub const OUTER_NS_ENV: &str = "SYNCGATE_E2E_OUTER_NS";
/// Seconds the outer run waits for the inner run (default 300).
pub const TIMEOUT_ENV: &str = "SYNCGATE_E2E_TIMEOUT";
/// How long the outer run waits when neither the test nor [`TIMEOUT_ENV`]
/// asks for more.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The inner run prints its mount namespace after this prefix (for humans
/// reading the log; the outer run observes it directly).
const MNTNS_LINE: &str = "syncgate-e2e: mount namespace ";

/// Declares a `#[test]` whose body runs as root in a private namespace:
/// `e2e_test! { fn name() { body } }`. The outer run returns after checking
/// that the child passed and left the machine untouched.
macro_rules! e2e_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            let test = $crate::support::ns::test_path(module_path!(), stringify!($name));
            if !$crate::support::ns::in_private_host(&test) {
                return;
            }
            $body
        }
    };
}
pub(crate) use e2e_test;

/// The libtest name of a test (`module_path!()` without the crate name, then
/// `::fn_name`), as `--exact` wants it: `integration::harness` + `smoke` →
/// `harness::smoke`.
pub fn test_path(module_path: &str, fn_name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{fn_name}"),
        None => fn_name.to_string(),
    }
}

/// True in the inner run (inside the namespace).
pub fn inside() -> bool {
    std::env::var_os(NS_ENV).is_some()
}

/// What the outer run learned about the last namespace run on this thread
/// (each test runs on its own thread, so this is the caller's own run).
#[derive(Debug, Clone)]
pub struct NsRun {
    /// Prefix of the inner run's temporary directories (and so of every path
    /// under its workspace).
    pub tag: String,
    /// The inner run's mount namespace, e.g. `mnt:[4026532301]` (`None` if
    /// it could not be observed). Once the outer run has returned, the
    /// kernel may reuse this number for an unrelated namespace.
    pub mount_ns: Option<String>,
    /// Everything the inner run printed.
    pub output: String,
}

thread_local! {
    static LAST_RUN: std::cell::RefCell<Option<NsRun>> = const { std::cell::RefCell::new(None) };
}

/// The outer run's record of the namespace run that just finished on this
/// thread (for tests that assert more about the real host afterwards).
pub fn last_run() -> Option<NsRun> {
    LAST_RUN.with(|r| r.borrow().clone())
}

/// Outside the namespace: runs the test `test_name` (its full libtest path,
/// e.g. `harness::smoke`) in a private mount + network namespace, streams its
/// output, asserts it passed and left nothing behind, and returns false.
/// Inside the namespace: checks that it really is private and returns true.
pub fn in_private_host(test_name: &str) -> bool {
    in_private_host_within(test_name, Duration::ZERO)
}

/// Like [`in_private_host`] for a test that needs more time: the outer run
/// waits up to `timeout` or [`TIMEOUT_ENV`] seconds (default
/// [`DEFAULT_TIMEOUT`]), whichever is longer.
pub fn in_private_host_within(test_name: &str, timeout: Duration) -> bool {
    if inside() {
        assert_private_namespace();
        return true;
    }
    run_in_namespace(test_name, timeout);
    false
}

/// The prefix the inner run of `test_name` uses for its temporary
/// directories in this process (so the outer run can look for leftovers).
pub fn tag_for(test_name: &str) -> String {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let short: String = test_name
        .replace("::", "-")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(24)
        .collect();
    format!(
        "sge2e-{}-{}-{short}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Prefix for temporary directory names: the outer run's tag inside the
/// namespace, `sge2e-<what>-` outside.
pub fn temp_prefix(what: &str) -> String {
    match std::env::var(TAG_ENV) {
        Ok(tag) if inside() => format!("{tag}-{what}-"),
        _ => format!("sge2e-{what}-"),
    }
}

/// Panics unless this process runs as root in a mount and network namespace
/// other than the outer run's (passed in [`OUTER_NS_ENV`]) and, where it is
/// readable, PID 1's: the guard that keeps a stray `SYNCGATE_E2E_NS=1` from
/// letting a test rewrite the real `/etc`.
pub fn assert_private_namespace() {
    assert!(
        inside(),
        "only for the inner run: wrap the test in e2e_test! or ns::in_private_host"
    );
    assert!(
        nix::unistd::geteuid().is_root(),
        "{NS_ENV} is set but this process is not root"
    );
    let outer = std::env::var(OUTER_NS_ENV).unwrap_or_else(|_| {
        panic!(
            "{NS_ENV} is set without {OUTER_NS_ENV}: not started by the harness; \
             refusing to touch the host"
        )
    });
    let mine = own_namespaces();
    assert!(
        !outer.split(',').any(|ns| mine.split(',').any(|m| m == ns)),
        "{NS_ENV} is set but namespaces {mine} are shared with the outer run ({outer}); \
         refusing to touch the host"
    );
    for ns in ["mnt", "net"] {
        // Often unreadable in containers/sandboxes; then the check above must do.
        if let Ok(init) = fs::read_link(format!("/proc/1/ns/{ns}")) {
            let own = fs::read_link(format!("/proc/self/ns/{ns}")).expect("read /proc/self/ns");
            assert_ne!(
                own, init,
                "shares PID 1's {ns} namespace; refusing to touch the host"
            );
        }
    }
    static ANNOUNCED: std::sync::Once = std::sync::Once::new();
    ANNOUNCED.call_once(|| {
        let mnt = fs::read_link("/proc/self/ns/mnt").expect("read /proc/self/ns/mnt");
        println!("{MNTNS_LINE}{}", mnt.display());
    });
}

/// "mnt:[N],net:[M]" for this process.
fn own_namespaces() -> String {
    ["mnt", "net"]
        .map(|ns| {
            let link = fs::read_link(format!("/proc/self/ns/{ns}")).expect("read /proc/self/ns");
            link.to_string_lossy().into_owned()
        })
        .join(",")
}

/// Panics with a clear message unless e2e tests can run here.
fn preflight(test_name: &str) -> PathBuf {
    assert!(
        nix::unistd::geteuid().is_root(),
        "e2e test `{test_name}` must run as root: it runs real sshd, sudo and useradd inside a \
         private namespace (`unshare --mount --net`). Run the suite as root (as CI does), \
         after scripts/install-test-deps."
    );
    super::which("unshare").unwrap_or_else(|| {
        panic!("e2e test `{test_name}` needs `unshare` (util-linux): run scripts/install-test-deps")
    })
}

/// The outer run: see [`in_private_host`].
fn run_in_namespace(test_name: &str, at_least: Duration) {
    let unshare = preflight(test_name);
    // One namespace run at a time on the whole machine (not per test
    // executable: worktrees and parallel `cargo test`s have their own), since
    // namespaces share the kernel's uid space. /tmp itself is the lock, so
    // nothing is left behind.
    let lock_dir = File::open("/tmp").expect("open /tmp for locking");
    let _serial = Flock::lock(lock_dir, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock /tmp: {e}"));
    let exe = std::env::current_exe().expect("current_exe");

    let tag = tag_for(test_name);
    let before = Snapshot::take();
    let mut child = Command::new(unshare)
        .args(["--mount", "--net", "--propagation", "private"])
        .arg(&exe)
        .args([
            "--exact",
            test_name,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(NS_ENV, "1")
        .env(TAG_ENV, &tag)
        .env(OUTER_NS_ENV, own_namespaces())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    // Holding the namespace open keeps its inode number from being recycled
    // by a later namespace, so "is in this namespace" means "is ours".
    let pinned = pin_mount_namespace(&mut child);
    let log = Arc::new(Mutex::new(String::new()));
    let pumps = [
        pump(child.stdout.take().expect("stdout"), log.clone(), false),
        pump(child.stderr.take().expect("stderr"), log.clone(), true),
    ];

    let timeout = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT.as_secs())
        .max(at_least.as_secs());
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut problems = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for namespace child") {
            break status;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "timed out after {timeout}s ({TIMEOUT_ENV}); killed"
            ));
            let _ = child.kill();
            break child.wait().expect("wait for killed namespace child");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A leaked daemon that inherited the pipes would keep them open forever.
    let pump_deadline = Instant::now() + Duration::from_secs(2);
    while pumps.iter().any(|p| !p.is_finished()) && Instant::now() < pump_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if pumps.iter().any(|p| !p.is_finished()) {
        problems.push("a process still holds the namespace child's stdout/stderr".into());
    }
    let output = log.lock().expect("log").clone();

    let mount_ns = pinned.as_ref().map(|(_, name)| name.clone());
    LAST_RUN.with(|r| {
        *r.borrow_mut() = Some(NsRun {
            tag: tag.clone(),
            mount_ns: mount_ns.clone(),
            output: output.clone(),
        })
    });
    problems.extend(leftover_processes(mount_ns.as_deref(), &tag));
    problems.extend(leftover_dirs(&tag));
    problems.extend(before.differences(&Snapshot::take()));
    if !status.success() {
        problems.insert(0, format!("namespace child failed: {status}"));
    } else if !output.contains("test result: ok. 1 passed") {
        let msg = format!(
            "namespace child did not run exactly one test named `{test_name}` (wrong --exact path?)"
        );
        problems.insert(0, msg);
    }
    assert!(
        problems.is_empty(),
        "e2e test `{test_name}`:\n  {}\n===== namespace child output =====\n{output}",
        problems.join("\n  ")
    );
}

/// Opens the child's mount namespace as soon as `unshare` has switched it
/// (its inode differs from ours). Returns the open file and `mnt:[INODE]`.
fn pin_mount_namespace(child: &mut std::process::Child) -> Option<(File, String)> {
    use std::os::unix::fs::MetadataExt;
    let own = fs::metadata("/proc/self/ns/mnt").ok()?.ino();
    let path = format!("/proc/{}/ns/mnt", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        if let Ok(file) = File::open(&path) {
            let ino = file.metadata().ok()?.ino();
            if ino != own {
                return Some((file, format!("mnt:[{ino}]")));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Copies a child pipe to our stdout/stderr (so libtest shows it) and `log`.
fn pump(src: impl Read + Send + 'static, log: Arc<Mutex<String>>, is_err: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line);
            if is_err {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
            log.lock().expect("log").push_str(&text);
            line.clear();
        }
    })
}

/// Processes that outlived the namespace child: anything still in its mount
/// namespace or mentioning its workspace. They are killed, and reported.
fn leftover_processes(mount_ns: Option<&str>, tag: &str) -> Vec<String> {
    let find = || {
        let mut pids = procs::pids_with_cmdline_containing(tag);
        if let Some(ns) = mount_ns {
            pids.extend(procs::pids_in_mount_namespace(ns));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    };
    // Give SIGKILLed processes a moment to be reaped by init.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pids = find();
    while !pids.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        pids = find();
    }
    if pids.is_empty() {
        return Vec::new();
    }
    let listing = procs::describe_pids(&pids);
    let survivors = procs::kill_all(&pids);
    vec![format!(
        "processes outlived the namespace (now killed{}):\n{listing}",
        if survivors.is_empty() {
            String::new()
        } else {
            format!("; unkillable: {survivors:?}")
        }
    )]
}

/// Temporary directories of the namespace child that still exist (removed).
fn leftover_dirs(tag: &str) -> Vec<String> {
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(tag))
        .map(|e| {
            let _ = fs::remove_dir_all(e.path());
            format!(
                "temporary directory left behind (now removed): {}",
                e.path().display()
            )
        })
        .collect()
}

/// The host state e2e tests must not change: account databases, sudoers,
/// home and mail directories.
#[derive(PartialEq, Eq)]
struct Snapshot(BTreeMap<&'static str, Option<Vec<u8>>>);

const SNAPSHOT_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
    "/etc/sudoers",
];
const SNAPSHOT_DIRS: &[&str] = &["/etc/sudoers.d", "/etc/ssh", "/home", "/var/mail"];

impl Snapshot {
    fn take() -> Snapshot {
        let files = SNAPSHOT_FILES.iter().map(|&f| (f, fs::read(f).ok()));
        let dirs = SNAPSHOT_DIRS.iter().map(|&d| (d, list_dir(Path::new(d))));
        Snapshot(files.chain(dirs).collect())
    }

    fn differences(&self, after: &Snapshot) -> Vec<String> {
        self.0
            .iter()
            .filter(|&(path, content)| after.0.get(path) != Some(content))
            .map(|(path, _)| format!("the real host's {path} changed"))
            .collect()
    }
}

/// Sorted names in `dir` joined by newlines (`None` if unreadable).
fn list_dir(dir: &Path) -> Option<Vec<u8>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Some(names.join("\n").into_bytes())
}
