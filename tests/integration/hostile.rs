//! A hostile upstream, a hostile reader and a careless install, against the
//! owner side: syncgate's private names in upstream, a reader holding a lock
//! on dest, an rsync the login account could replace, and the counting
//! pass's expected `--max-delete` line. The first and last need no root
//! (`Fixture`); the others run in the private namespace with real accounts.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fixture::{Fixture, M};
use crate::support::host::set_mode;
use crate::support::mirror_host::{MirrorHost, OWNER, READER};
use crate::support::{self, e2e_test, opts, stderr, ChildGuard, Mirrors, Test};

const PRIVATE: &str = ".syncgate-tmp";
const PARTIAL: &str = ".~tmp~";

/// Makes `f` run rsync through a wrapper that notes, before and after each
/// rsync, what `dest/.syncgate-tmp` is ("directory 2700 UID"); returns the
/// log's path.
fn watch_private_dir(f: &mut Fixture) -> std::path::PathBuf {
    let log = f.dir.path().join("private-dir.log");
    f.use_rsync_wrapper(&format!(
        "#!/bin/sh\nnote() {{ stat -c '%F %a %u' '{d}/{PRIVATE}' >> '{log}' 2>/dev/null || echo missing >> '{log}'; }}\nnote\n/usr/bin/rsync \"$@\"\nrc=$?\nnote\nexit $rc\n",
        d = f.dest.display(),
        log = log.display(),
    ));
    log
}

/// While rsync ran the private dir was always syncgate's own real 0700
/// directory, and after the run it is gone or still that.
fn assert_private_dir_stayed_private(f: &Fixture, log: &Path) {
    let uid = nix::unistd::getuid().as_raw();
    let seen = fs::read_to_string(log).unwrap_or_default();
    assert!(!seen.is_empty(), "rsync never ran");
    for l in seen.lines() {
        // "directory MODE UID"; a setgid bit inherited from dest is fine.
        let f: Vec<&str> = l.split(' ').collect();
        let private = f.len() == 3
            && f[0] == "directory"
            && u32::from_str_radix(f[1], 8).is_ok_and(|m| m & 0o777 == 0o700)
            && f[2] == uid.to_string();
        assert!(private, "the private dir while rsync ran:\n{seen}");
    }
    fs::write(log, b"").unwrap();
    match fs::symlink_metadata(f.dest_path(PRIVATE)) {
        Err(_) => {}
        Ok(md) => assert!(
            md.file_type().is_dir() && md.mode() & 0o777 == 0o700 && md.uid() == uid,
            "after the run dest/{PRIVATE} is {:?} mode {:o} uid {}",
            md.file_type(),
            md.mode(),
            md.uid()
        ),
    }
}

/// No entry named like rsync's holding dir anywhere in dest.
fn assert_no_partial_dir_name(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            assert_ne!(e.file_name(), PARTIAL, "published: {}", e.path().display());
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
        }
    }
}

fn sync_ok(f: &Fixture) -> String {
    stderr(&f.sync().status(0).run())
}

/// An ordinary upstream with names that sort before and after the private
/// dir's.
fn ordinary_upstream(f: &Fixture) {
    f.put(M, ".a-early", b"early");
    f.put(M, "a.iso", b"image a");
    f.put(M, "pool/p.deb", b"package");
    f.put(M, "z.iso", b"image z");
    f.put(M, "SHA256SUMS", b"x  a.iso\n");
}

fn assert_ordinary_mirror(f: &Fixture) {
    for (p, want) in [
        (".a-early", &b"early"[..]),
        ("a.iso", b"image a"),
        ("pool/p.deb", b"package"),
        ("z.iso", b"image z"),
        ("SHA256SUMS", b"x  a.iso\n"),
    ] {
        assert_eq!(fs::read(f.dest_path(p)).unwrap(), want, "{p}");
    }
}

/// A resync that publishes a new file and deletes one works too.
fn resync_works(f: &Fixture, log: &Path) {
    f.put(M, "new.iso", b"new");
    fs::remove_file(f.upstream.join("z.iso")).unwrap();
    sync_ok(f);
    assert_eq!(fs::read(f.dest_path("new.iso")).unwrap(), b"new");
    assert!(!f.dest_path("z.iso").exists());
    assert_private_dir_stayed_private(f, log);
    f.put(M, "z.iso", b"image z");
    fs::remove_file(f.upstream.join("new.iso")).unwrap();
}

#[test]
fn an_upstream_file_named_like_the_private_dir_is_never_published() {
    let mut f = Fixture::new(opts());
    let log = watch_private_dir(&mut f);
    ordinary_upstream(&f);
    f.put(M, PRIVATE, b"not a directory");
    sync_ok(&f);
    assert_ordinary_mirror(&f);
    assert_private_dir_stayed_private(&f, &log);
    resync_works(&f, &log);
    sync_ok(&f);
    assert_ordinary_mirror(&f);
    assert_private_dir_stayed_private(&f, &log);
    assert!(!f.dest_path(PRIVATE).exists());
}

#[test]
fn an_upstream_symlink_named_like_the_private_dir_is_never_published() {
    // First sync.
    let mut f = Fixture::new(opts());
    let log = watch_private_dir(&mut f);
    ordinary_upstream(&f);
    symlink("pool", f.upstream.join(PRIVATE)).unwrap();
    sync_ok(&f);
    assert_ordinary_mirror(&f);
    assert_private_dir_stayed_private(&f, &log);
    resync_works(&f, &log);

    // A populated mirror whose upstream grows the symlink later.
    let mut f = Fixture::new(opts());
    let log = watch_private_dir(&mut f);
    ordinary_upstream(&f);
    sync_ok(&f);
    symlink("pool", f.upstream.join(PRIVATE)).unwrap();
    f.put(M, "pool/q.deb", b"another");
    sync_ok(&f);
    assert_ordinary_mirror(&f);
    assert_eq!(fs::read(f.dest_path("pool/q.deb")).unwrap(), b"another");
    assert_private_dir_stayed_private(&f, &log);
    resync_works(&f, &log);
    assert!(fs::symlink_metadata(f.dest_path(PRIVATE)).is_err());
    let leaked: Vec<_> = fs::read_dir(f.dest_path("pool"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leaked.is_empty(), "temporaries in pool/: {leaked:?}");
}

#[test]
fn upstream_entries_named_like_rsyncs_holding_dir_are_never_published() {
    let mut f = Fixture::new(opts());
    let log = watch_private_dir(&mut f);
    ordinary_upstream(&f);
    f.put(M, PARTIAL, b"a file");
    f.put(M, &format!("pool/{PARTIAL}/inside"), b"a dir");
    fs::create_dir_all(f.upstream.join("sub")).unwrap();
    symlink("..", f.upstream.join(format!("sub/{PARTIAL}"))).unwrap();
    sync_ok(&f);
    assert_ordinary_mirror(&f);
    assert_no_partial_dir_name(&f.dest);
    assert_private_dir_stayed_private(&f, &log);
    resync_works(&f, &log);
    assert_no_partial_dir_name(&f.dest);
    // Changed files below a directory holding the name go through stage 2's
    // delayed updates.
    f.put(M, "pool/p.deb", b"package 2");
    f.put(M, "SHA256SUMS", b"y  a.iso\n");
    sync_ok(&f);
    assert_eq!(fs::read(f.dest_path("pool/p.deb")).unwrap(), b"package 2");
    assert_no_partial_dir_name(&f.dest);
    assert_private_dir_stayed_private(&f, &log);

    // A dest where an older syncgate published such a file and a symlink:
    // the next sync that updates files beside them works and removes them.
    fs::write(f.dest_path(PARTIAL), b"old").unwrap();
    symlink("..", f.dest_path(&format!("pool/{PARTIAL}"))).unwrap();
    f.put(M, "a.iso", b"image a 2");
    f.put(M, "pool/p.deb", b"package three");
    sync_ok(&f);
    assert_eq!(fs::read(f.dest_path("a.iso")).unwrap(), b"image a 2");
    assert_eq!(
        fs::read(f.dest_path("pool/p.deb")).unwrap(),
        b"package three"
    );
    assert_no_partial_dir_name(&f.dest);
}

#[test]
fn fix_perms_removes_whatever_poses_as_the_private_dir() {
    let f = Fixture::new(opts());
    ordinary_upstream(&f);
    sync_ok(&f);
    for plant in ["symlink", "file"] {
        match plant {
            "symlink" => symlink("pool", f.dest_path(PRIVATE)).unwrap(),
            _ => fs::write(f.dest_path(PRIVATE), b"x").unwrap(),
        }
        fs::write(f.dest_path(PARTIAL), b"x").unwrap();
        let out = f
            .syncgate()
            .args(["fix-perms", M])
            .status(0)
            .context(move || format!("planted: {plant}"))
            .run();
        assert!(
            fs::symlink_metadata(f.dest_path(PRIVATE)).is_err(),
            "{plant} survived fix-perms: {}",
            support::show(&out)
        );
        assert!(fs::symlink_metadata(f.dest_path(PARTIAL)).is_err());
        assert_ordinary_mirror(&f);
    }
}

#[test]
fn a_sync_that_deletes_does_not_show_the_counting_pass_max_delete_line() {
    let f = Fixture::new(opts());
    ordinary_upstream(&f);
    sync_ok(&f);
    fs::remove_file(f.upstream.join("z.iso")).unwrap();
    let out = f
        .sync()
        .status(0)
        .stderr_lacks("max-delete")
        // Other stderr lines of the stages still come through.
        .stderr_contains("stage 2")
        .run();
    assert!(!f.dest_path("z.iso").exists(), "{}", support::show(&out));
}

e2e_test! {
    /// A member of the reader group may open dest (it lists it) and so
    /// could lock it; a sync must not wait for that lock.
    fn a_reader_holding_a_lock_on_dest_does_not_block_a_sync() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image a");
        let dest = mh.dest("iso");
        let mut cmd = mh.host.command_as(
            READER,
            &["flock", dest.to_str().unwrap(), "sh", "-c", "echo locked; exec sleep 300"],
        );
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut holder = ChildGuard::spawn(&mut cmd, "flock dest");
        let mut line = String::new();
        BufReader::new(holder.child_mut().stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "the reader could not lock dest");

        let started = Instant::now();
        let out = mh.ssh(Some("sync")).status(0).run();
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}: {}", started.elapsed(), support::show(&out));
        assert_eq!(fs::read(dest.join("a.iso")).unwrap(), b"image a");
        assert!(holder.is_running(), "the reader's lock went away");
        // And the owner's own lock still cannot be taken by the reader.
        let out = mh.host.run_as(READER, &["sh", "-c", &format!("ls -a {}/{PRIVATE} || true", dest.display())]);
        assert!(out.stdout.is_empty(), "{}", support::show(&out));
        holder.kill();
    }
}

e2e_test! {
    /// An rsync in a directory the login account owns could be replaced by
    /// it and would then run as the image owner: the owner side refuses it
    /// (exit 78 through sudo, a failed sync through ssh), and nothing is
    /// transferred.
    fn owner_side_refuses_an_rsync_the_login_account_could_replace() {
        let mut mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image a");
        let bin = mh.path("opt/sg/bin");
        fs::create_dir_all(&bin).unwrap();
        set_mode(&mh.path("opt"), 0o755);
        set_mode(&mh.path("opt/sg"), 0o755);
        let rsync = bin.join("rsync");
        fs::copy("/usr/bin/rsync", &rsync).unwrap();
        set_mode(&rsync, 0o755);
        nix::unistd::chown(&bin, Some(mh.login.uid.into()), Some(mh.login.gid.into())).unwrap();
        set_mode(&bin, 0o755);
        // Rewritten as root, mode 0644: only the rsync path changes.
        mh.reconfigure(|c| c.rsync = Some(rsync.clone()));

        let mut cmd = Command::new("/usr/bin/sudo");
        cmd.args(["-n", "-u", OWNER, mh.bin.to_str().unwrap(), "--config"])
            .arg(&mh.config)
            .args(["transfer", "iso"])
            .stdin(Stdio::null());
        Test::new(cmd)
            .tree(mh.dest("iso"))
            .status(78)
            .stderr_contains(bin.display().to_string())
            .stderr_contains("rsync")
            .stderr_contains("must be owned by root")
            .stderr_lacks("config file")
            .run();

        mh.ssh(Some("sync"))
            .failure()
            .stderr_contains("must be owned by root")
            .run();
        assert!(!mh.dest("iso").join("a.iso").exists(), "something was transferred");
    }
}
