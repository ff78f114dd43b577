//! The syncgate config a fixture writes, as typed fields rendered to TOML in
//! one place ([`Config::render`]). Tests change a field and rewrite the
//! file; nothing edits config text by string replacement.

use std::fmt::Write as _;
use std::path::PathBuf;

/// The whole config file.
#[derive(Clone, Debug)]
pub struct Config {
    /// `rsync = "…"`: a wrapper script instead of the system rsync.
    pub rsync: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// `"direct"` or `"sudo"`.
    pub privilege: &'static str,
    pub login_user: Option<String>,
    pub binary: Option<PathBuf>,
    /// `audit_required = …` (unset: syncgate's default, true).
    pub audit_required: Option<bool>,
    pub heartbeat: u32,
    /// `status_page = "…"`: the directory the status page is written into.
    pub status_page: Option<PathBuf>,
    pub syslog_socket: PathBuf,
    pub syslog_facility: Option<String>,
    /// `metrics_file = "…"` (unset: no metrics file).
    pub metrics_file: Option<PathBuf>,
    /// `history_size = N` bytes (unset: syncgate's default, 1 MiB).
    pub history_size: Option<u64>,
    pub mirrors: Vec<Mirror>,
    pub keys: Vec<Key>,
    /// `[hub]` (needed once a mirror has a downstream).
    pub hub: Option<HubTable>,
}

/// The `[hub]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubTable {
    pub known_hosts: PathBuf,
    pub max_parallel: Option<u64>,
    pub ssh: Option<PathBuf>,
}

/// One `[mirror.M.downstream.LABEL]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownstreamTable {
    pub label: String,
    pub host: String,
    pub port: Option<u16>,
    pub user: String,
    pub archive: Option<String>,
    pub key: PathBuf,
    /// `"syncgate"` or `"ftpsync"`.
    pub kind: &'static str,
    /// `"all"`, `"staged"` or `"mhop"`.
    pub mode: &'static str,
    /// Seconds.
    pub timeout: Option<u64>,
}

/// One `[mirror.NAME]` table.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub name: String,
    /// A local directory or an `rsync://` URL.
    pub upstream: String,
    pub dest: PathBuf,
    pub owner: String,
    pub reader_group: String,
    pub opts: Opts,
}

/// The optional settings of a mirror table (unset: syncgate's default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opts {
    pub bwlimit: Option<u64>,
    pub timeout: Option<u64>,
    pub io_timeout: Option<u64>,
    pub queue_timeout: Option<u64>,
    pub max_delete: Option<u64>,
    /// `max_waiting = N`: requests that may wait for the mirror's lock.
    pub max_waiting: Option<u64>,
    pub file_mode: Option<&'static str>,
    pub dir_mode: Option<&'static str>,
    pub exclude: Vec<&'static str>,
    /// `publish = "snapshot" | "two-stage"` (unset: snapshots, or in place
    /// when the owner cannot write dest's parent).
    pub publish: Option<&'static str>,
    /// `keep = N`: snapshots kept, the live one included.
    pub keep: Option<u64>,
    /// `busy_wait = N`: seconds a run waits for upstream's update.
    pub busy_wait: Option<u64>,
    /// `profile = "debian"`.
    pub profile: Option<&'static str>,
    /// `verify = "changed" | "all" | "off"`.
    pub verify: Option<&'static str>,
    /// `checksum_files = [...]` (`Some(vec![])` renders an empty list).
    pub checksum_files: Option<Vec<&'static str>>,
    /// `verify_signature = { keyring = "…", program = "…" }`.
    pub verify_signature: Option<Signature>,
    /// `change_marker = "…"` (upstream's file that changes with the tree).
    pub change_marker: Option<&'static str>,
    /// `full_every = "…"` (a duration).
    pub full_every: Option<&'static str>,
    /// `cascade = "wait" | "detach"`.
    pub cascade: Option<&'static str>,
    /// `require = N`.
    pub require: Option<u64>,
    /// `push_delay = N` (seconds).
    pub push_delay: Option<u64>,
    /// `[mirror.NAME.downstream.LABEL]` tables.
    pub downstreams: Vec<DownstreamTable>,
    /// `max_age = "…"`: a duration (`"2h"`, `60`).
    pub max_age: Option<&'static str>,
}

/// The `verify_signature` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub keyring: PathBuf,
    /// `"gpgv"` or `"sqv"` (unset: syncgate's default, gpgv).
    pub program: Option<&'static str>,
}

/// No optional settings; chain the setters: `opts().bwlimit(1000)`.
pub fn opts() -> Opts {
    Opts::default()
}

impl Opts {
    pub fn bwlimit(mut self, kib_per_s: u64) -> Opts {
        self.bwlimit = Some(kib_per_s);
        self
    }
    pub fn timeout(mut self, secs: u64) -> Opts {
        self.timeout = Some(secs);
        self
    }
    pub fn io_timeout(mut self, secs: u64) -> Opts {
        self.io_timeout = Some(secs);
        self
    }
    pub fn queue_timeout(mut self, secs: u64) -> Opts {
        self.queue_timeout = Some(secs);
        self
    }
    pub fn max_delete(mut self, n: u64) -> Opts {
        self.max_delete = Some(n);
        self
    }
    pub fn max_waiting(mut self, n: u64) -> Opts {
        self.max_waiting = Some(n);
        self
    }
    pub fn file_mode(mut self, mode: &'static str) -> Opts {
        self.file_mode = Some(mode);
        self
    }
    pub fn dir_mode(mut self, mode: &'static str) -> Opts {
        self.dir_mode = Some(mode);
        self
    }
    pub fn exclude(mut self, pattern: &'static str) -> Opts {
        self.exclude.push(pattern);
        self
    }
    /// `publish = MODE`: `"snapshot"` or `"two-stage"`.
    pub fn publish(mut self, mode: &'static str) -> Opts {
        self.publish = Some(mode);
        self
    }
    pub fn keep(mut self, n: u64) -> Opts {
        self.keep = Some(n);
        self
    }
    pub fn profile(mut self, p: &'static str) -> Opts {
        self.profile = Some(p);
        self
    }
    pub fn change_marker(mut self, path: &'static str) -> Opts {
        self.change_marker = Some(path);
        self
    }
    pub fn full_every(mut self, duration: &'static str) -> Opts {
        self.full_every = Some(duration);
        self
    }
    /// `max_age = DURATION` (`"2h"`, `"60"`).
    pub fn max_age(mut self, d: &'static str) -> Opts {
        self.max_age = Some(d);
        self
    }
    pub fn busy_wait(mut self, secs: u64) -> Opts {
        self.busy_wait = Some(secs);
        self
    }
    /// `verify = MODE`: `"changed"`, `"all"` or `"off"`.
    pub fn verify(mut self, mode: &'static str) -> Opts {
        self.verify = Some(mode);
        self
    }
    /// Adds `pattern` to `checksum_files` (the first call replaces
    /// syncgate's default list).
    pub fn checksum_file(mut self, pattern: &'static str) -> Opts {
        self.checksum_files
            .get_or_insert_with(Vec::new)
            .push(pattern);
        self
    }
    /// `cascade = MODE`: `"wait"` or `"detach"`.
    pub fn cascade(mut self, mode: &'static str) -> Opts {
        self.cascade = Some(mode);
        self
    }
    pub fn require(mut self, n: u64) -> Opts {
        self.require = Some(n);
        self
    }
    pub fn push_delay(mut self, secs: u64) -> Opts {
        self.push_delay = Some(secs);
        self
    }
    /// Adds a `[mirror.NAME.downstream.LABEL]` table.
    pub fn downstream(mut self, d: DownstreamTable) -> Opts {
        self.downstreams.push(d);
        self
    }
    /// `verify_signature = { keyring = KEYRING[, program = PROGRAM] }`.
    pub fn verify_signature(
        mut self,
        keyring: impl Into<PathBuf>,
        program: Option<&'static str>,
    ) -> Opts {
        self.verify_signature = Some(Signature {
            keyring: keyring.into(),
            program,
        });
        self
    }
}

/// One `[key.NAME]` table.
#[derive(Clone, Debug)]
pub struct Key {
    pub name: &'static str,
    pub verbs: Vec<&'static str>,
    pub mirrors: Vec<&'static str>,
    pub from: Vec<&'static str>,
    /// `max_waiting = N`: this key's requests that may wait at once
    /// (unset: no cap of its own).
    pub max_waiting: Option<u64>,
    /// `runmirrors = true`: a request that does not succeed exits 255.
    pub runmirrors: bool,
}

impl Key {
    /// `jenkins` may sync and see mirror `iso`, from loopback.
    pub fn jenkins() -> Key {
        Key {
            name: "jenkins",
            verbs: vec!["sync", "status", "help"],
            mirrors: vec!["iso"],
            from: vec!["127.0.0.0/8"],
            max_waiting: None,
            runmirrors: false,
        }
    }
}

fn quoted(s: impl std::fmt::Display) -> String {
    format!("\"{s}\"")
}

fn list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(quoted).collect();
    format!("[{}]", items.join(", "))
}

impl Config {
    /// The mirror called `name` (panics if there is none).
    pub fn mirror(&self, name: &str) -> &Mirror {
        self.mirrors
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no mirror {name} in the test config"))
    }

    pub fn mirror_mut(&mut self, name: &str) -> &mut Mirror {
        self.mirrors
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no mirror {name} in the test config"))
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut t = String::new();
        if let Some(r) = &self.rsync {
            writeln!(t, "rsync = {}", quoted(r.display())).unwrap();
        }
        writeln!(t, "state_dir = {}", quoted(self.state_dir.display())).unwrap();
        writeln!(t, "privilege = {}", quoted(self.privilege)).unwrap();
        if let Some(u) = &self.login_user {
            writeln!(t, "login_user = {}", quoted(u)).unwrap();
        }
        if let Some(b) = &self.binary {
            writeln!(t, "binary = {}", quoted(b.display())).unwrap();
        }
        if let Some(a) = self.audit_required {
            writeln!(t, "audit_required = {a}").unwrap();
        }
        if let Some(p) = &self.status_page {
            writeln!(t, "status_page = {}", quoted(p.display())).unwrap();
        }
        if let Some(m) = &self.metrics_file {
            writeln!(t, "metrics_file = {}", quoted(m.display())).unwrap();
        }
        if let Some(n) = self.history_size {
            writeln!(t, "history_size = {n}").unwrap();
        }
        writeln!(t, "heartbeat = {}\n", self.heartbeat).unwrap();
        writeln!(
            t,
            "[syslog]\nsocket = {}",
            quoted(self.syslog_socket.display())
        )
        .unwrap();
        if let Some(f) = &self.syslog_facility {
            writeln!(t, "facility = {}", quoted(f)).unwrap();
        }
        t.push('\n');
        if let Some(h) = &self.hub {
            writeln!(
                t,
                "[hub]\nknown_hosts = {}",
                quoted(h.known_hosts.display())
            )
            .unwrap();
            if let Some(n) = h.max_parallel {
                writeln!(t, "max_parallel = {n}").unwrap();
            }
            if let Some(ssh) = &h.ssh {
                writeln!(t, "ssh = {}", quoted(ssh.display())).unwrap();
            }
            t.push('\n');
        }
        for m in &self.mirrors {
            m.render(&mut t);
        }
        for k in &self.keys {
            writeln!(
                t,
                "[key.{}]\nverbs = {}\nmirrors = {}\nfrom = {}",
                k.name,
                list(&k.verbs),
                list(&k.mirrors),
                list(&k.from)
            )
            .unwrap();
            if k.runmirrors {
                writeln!(t, "runmirrors = true").unwrap();
            }
            if let Some(n) = k.max_waiting {
                writeln!(t, "max_waiting = {n}").unwrap();
            }
        }
        t
    }
}

impl Mirror {
    fn render(&self, t: &mut String) {
        writeln!(
            t,
            "[mirror.{}]\nupstream = {}\ndest = {}\nowner = {}\nreader_group = {}",
            self.name,
            quoted(&self.upstream),
            quoted(self.dest.display()),
            quoted(&self.owner),
            quoted(&self.reader_group)
        )
        .unwrap();
        let o = &self.opts;
        let numbers = [
            ("bwlimit", o.bwlimit),
            ("timeout", o.timeout),
            ("io_timeout", o.io_timeout),
            ("queue_timeout", o.queue_timeout),
            ("max_delete", o.max_delete),
            ("max_waiting", o.max_waiting),
            ("keep", o.keep),
            ("busy_wait", o.busy_wait),
            ("require", o.require),
            ("push_delay", o.push_delay),
        ];
        for (key, value) in numbers {
            if let Some(v) = value {
                writeln!(t, "{key} = {v}").unwrap();
            }
        }
        let words = [
            ("file_mode", o.file_mode),
            ("dir_mode", o.dir_mode),
            ("publish", o.publish),
            ("profile", o.profile),
            ("verify", o.verify),
            ("change_marker", o.change_marker),
            ("full_every", o.full_every),
            ("cascade", o.cascade),
            ("max_age", o.max_age),
        ];
        for (key, value) in words {
            if let Some(v) = value {
                writeln!(t, "{key} = {}", quoted(v)).unwrap();
            }
        }
        if !o.exclude.is_empty() {
            writeln!(t, "exclude = {}", list(&o.exclude)).unwrap();
        }
        if let Some(files) = &o.checksum_files {
            writeln!(t, "checksum_files = {}", list(files)).unwrap();
        }
        if let Some(sig) = &o.verify_signature {
            let program = sig
                .program
                .map(|p| format!(", program = {}", quoted(p)))
                .unwrap_or_default();
            writeln!(
                t,
                "verify_signature = {{ keyring = {}{program} }}",
                quoted(sig.keyring.display())
            )
            .unwrap();
        }
        t.push('\n');
        for d in &o.downstreams {
            writeln!(
                t,
                "[mirror.{}.downstream.{}]\nhost = {}\nuser = {}\nkey = {}\nkind = {}\nmode = {}",
                self.name,
                d.label,
                quoted(&d.host),
                quoted(&d.user),
                quoted(d.key.display()),
                quoted(d.kind),
                quoted(d.mode)
            )
            .unwrap();
            if let Some(p) = d.port {
                writeln!(t, "port = {p}").unwrap();
            }
            if let Some(a) = &d.archive {
                writeln!(t, "archive = {}", quoted(a)).unwrap();
            }
            if let Some(s) = d.timeout {
                writeln!(t, "timeout = {s}").unwrap();
            }
            t.push('\n');
        }
    }
}
