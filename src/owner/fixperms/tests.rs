use super::at::{chmod_nofollow, chmod_via_fd, open_dir_at};
use super::links::link_escape_reason;
use super::*;
use crate::owner::dest::{RSYNC_PARTIAL_DIR, TEMP_DIR};
use nix::sys::stat::FileStat;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::time::Duration;

/// (ino, ctime_sec, ctime_nsec, mode, uid, gid)
type Snap = BTreeMap<PathBuf, (u64, i64, i64, u32, u32, u32)>;

fn is_root() -> bool {
    unistd::geteuid().is_root()
}

fn me() -> (u32, u32) {
    (unistd::geteuid().as_raw(), unistd::getegid().as_raw())
}

fn policy() -> PermPolicy {
    let (uid, gid) = me();
    PermPolicy {
        uid,
        gid,
        file_mode: 0o640,
        dir_mode: 0o750,
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn chgrp(p: &Path, gid: u32) {
    lchown(p, None, Some(gid)).unwrap();
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & PERM_MASK
}

fn owner_of(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn mkdir(p: &Path, mode: u32) {
    fs::create_dir(p).unwrap();
    chmod(p, mode);
}

fn mkfile(p: &Path, mode: u32) {
    fs::write(p, b"data").unwrap();
    chmod(p, mode);
}

fn stat_one(p: &Path) -> (u64, i64, i64, u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (
        m.ino(),
        m.ctime(),
        m.ctime_nsec(),
        m.mode() & PERM_MASK,
        m.uid(),
        m.gid(),
    )
}

/// lstat of every entry below and including `p`, never following links.
fn snapshot(p: &Path) -> Snap {
    let mut out = Snap::new();
    let mut todo = vec![p.to_owned()];
    while let Some(p) = todo.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        out.insert(p.clone(), stat_one(&p));
    }
    out
}

/// Sleep long enough that any inode change gets a new ctime, and prove
/// that ctime really detects a no-op chown on this filesystem.
fn settle(scratch_dir: &Path) {
    let probe = scratch_dir.join("ctime-probe");
    fs::write(&probe, b"").unwrap();
    let before = stat_one(&probe);
    std::thread::sleep(Duration::from_millis(30));
    let (uid, gid) = (before.4, before.5);
    std::os::unix::fs::chown(&probe, Some(uid), Some(gid)).unwrap();
    let after = stat_one(&probe);
    assert_ne!(
        (before.1, before.2),
        (after.1, after.2),
        "ctime does not detect a no-op chown here; the test would prove nothing"
    );
    fs::remove_file(&probe).unwrap();
    std::thread::sleep(Duration::from_millis(30));
}

/// tmp/ holds `m` (the tree) and room for "outside" files.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("m");
    mkdir(&root, 0o750);
    (tmp, root)
}

/// A tree that already matches `policy()`.
fn correct_tree(root: &Path) {
    mkdir(&root.join("sub"), 0o750);
    mkdir(&root.join("sub/deeper"), 0o750);
    mkfile(&root.join("a.iso"), 0o640);
    mkfile(&root.join("sub/x.iso"), 0o640);
    mkfile(&root.join("sub/deeper/y.iso"), 0o640);
    symlink("sub/x.iso", root.join("current")).unwrap();
    symlink("../a.iso", root.join("sub/up")).unwrap();
    symlink("deeper", root.join("sub/alias")).unwrap();
    symlink(".", root.join("self")).unwrap();
}

#[test]
fn correct_tree_is_left_untouched() {
    let (tmp, root) = setup();
    correct_tree(&root);
    settle(tmp.path());
    let before = snapshot(&root);
    let rep = fix_tree(&root, &policy()).unwrap();
    assert_eq!(rep.changed, 0, "{rep:?}");
    assert_eq!(rep.removed, 0);
    assert!(rep.notes.is_empty(), "{:?}", rep.notes);
    assert_eq!(rep.entries, before.len() as u64);
    assert_eq!(snapshot(&root), before);
    let rep2 = fix_tree(&root, &policy()).unwrap();
    assert_eq!(rep2, rep);
    assert_eq!(snapshot(&root), before);
}

#[test]
fn second_run_after_repair_changes_nothing() {
    let (tmp, root) = setup();
    correct_tree(&root);
    chmod(&root, 0o777);
    chmod(&root.join("a.iso"), 0o666);
    chmod(&root.join("sub/deeper"), 0o700);
    let first = fix_tree(&root, &policy()).unwrap();
    assert_eq!(first.changed, 3, "{first:?}");
    settle(tmp.path());
    let before = snapshot(&root);
    let second = fix_tree(&root, &policy()).unwrap();
    assert_eq!(second.changed, 0, "{second:?}");
    assert!(second.notes.is_empty());
    assert_eq!(snapshot(&root), before);
}

#[test]
fn drift_is_repaired_exactly() {
    if !is_root() {
        eprintln!("skipped: needs root to create foreign groups");
        return;
    }
    let (_tmp, root) = setup();
    chmod(&root, 0o700);
    mkfile(&root.join("world-writable"), 0o666);
    mkfile(&root.join("setuid"), 0o4755);
    mkfile(&root.join("sticky"), 0o1644);
    mkdir(&root.join("open-dir"), 0o777);
    mkdir(&root.join("setgid-dir"), 0o2770);
    mkfile(&root.join("setgid-dir/wrong-group"), 0o640);
    chgrp(&root.join("setgid-dir/wrong-group"), 12345);
    mkfile(&root.join("open-dir/wrong-owner"), 0o640);
    lchown(root.join("open-dir/wrong-owner"), Some(12345), Some(12345)).unwrap();
    mkfile(&root.join("fine"), 0o640);
    symlink("fine", root.join("link-wrong-group")).unwrap();
    chgrp(&root.join("link-wrong-group"), 12345);

    let rep = fix_tree(&root, &policy()).unwrap();
    let (uid, gid) = me();
    for (p, mode) in [
        ("", 0o750),
        ("world-writable", 0o640),
        ("setuid", 0o640),
        ("sticky", 0o640),
        ("open-dir", 0o750),
        ("setgid-dir", 0o750),
        ("setgid-dir/wrong-group", 0o640),
        ("open-dir/wrong-owner", 0o640),
        ("fine", 0o640),
    ] {
        let p = root.join(p);
        assert_eq!(mode_of(&p), mode, "{p:?}");
        assert_eq!(owner_of(&p), (uid, gid), "{p:?}");
    }
    assert_eq!(owner_of(&root.join("link-wrong-group")), (uid, gid));
    assert_eq!(rep.entries, 10);
    assert_eq!(rep.changed, 9, "{:#?}", rep.notes);
    assert_eq!(rep.removed, 0);
    assert_eq!(rep.notes.len(), 9);
    assert!(
        rep.notes
            .iter()
            .any(|n| n.contains("setuid") && n.contains("mode 4755 -> 0640")),
        "{:#?}",
        rep.notes
    );
    assert!(rep
        .notes
        .iter()
        .any(|n| n.contains("wrong-owner") && n.contains("owner 12345:12345 -> ")));
}

#[test]
fn setgid_dir_mode_and_foreign_policy_owner() {
    if !is_root() {
        eprintln!("skipped: needs root to chown to other ids");
        return;
    }
    let (_tmp, root) = setup();
    mkdir(&root.join("d"), 0o755);
    mkdir(&root.join("g"), 0o2750);
    mkfile(&root.join("d/f"), 0o4750);
    let pol = PermPolicy {
        uid: 4242,
        gid: 4343,
        file_mode: 0o644,
        dir_mode: 0o2750,
    };
    let rep = fix_tree(&root, &pol).unwrap();
    assert_eq!(rep.changed, 4, "{rep:?}");
    for p in ["", "d", "g"] {
        assert_eq!(mode_of(&root.join(p)), 0o2750, "{p}");
        assert_eq!(owner_of(&root.join(p)), (4242, 4343));
    }
    // chown cleared setuid; chmod then set the wanted mode.
    assert_eq!(mode_of(&root.join("d/f")), 0o644);
    assert_eq!(owner_of(&root.join("d/f")), (4242, 4343));
    let again = fix_tree(&root, &pol).unwrap();
    assert_eq!(again.changed, 0);
}

#[test]
fn escaping_symlinks_are_removed_and_targets_untouched() {
    let (tmp, root) = setup();
    let outside = tmp.path().join("secret");
    mkfile(&outside, 0o600);
    if is_root() {
        chgrp(&outside, 12345);
    }
    let outside_dir = tmp.path().join("outside-dir");
    mkdir(&outside_dir, 0o700);
    mkfile(&outside_dir.join("f"), 0o604);
    mkdir(&root.join("sub"), 0o750);
    mkdir(&root.join("sub/deep"), 0o750);
    symlink(&outside, root.join("abs")).unwrap();
    symlink("../secret", root.join("rel")).unwrap();
    symlink("../../secret", root.join("sub/rel2")).unwrap();
    symlink("../../../secret", root.join("sub/deep/rel3")).unwrap();
    symlink("../outside-dir", root.join("dirlink")).unwrap();
    symlink("/etc", root.join("sub/etc")).unwrap();
    // Lexically inside, but really escapes via `self -> .`.
    symlink(".", root.join("self")).unwrap();
    symlink("self/..", root.join("sneaky")).unwrap();
    symlink("sub/../../secret", root.join("zigzag")).unwrap();
    settle(tmp.path());
    let outside_before = snapshot(tmp.path().join("secret").as_path());
    let outside_dir_before = snapshot(&outside_dir);
    let etc_before: Snap = fs::read_dir("/etc")
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([PathBuf::from("/etc")])
        .map(|p| {
            let s = stat_one(&p);
            (p, s)
        })
        .collect();

    let rep = fix_tree(&root, &policy()).unwrap();

    for gone in [
        "abs",
        "rel",
        "sub/rel2",
        "sub/deep/rel3",
        "dirlink",
        "sub/etc",
        "sneaky",
        "zigzag",
    ] {
        assert!(
            fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} should be removed"
        );
    }
    assert!(fs::symlink_metadata(root.join("self")).is_ok());
    assert_eq!(rep.removed, 8, "{:#?}", rep.notes);
    assert_eq!(rep.changed, 0, "{:#?}", rep.notes);
    assert_eq!(rep.notes.len(), 8);
    assert!(rep
        .notes
        .iter()
        .any(|n| n.contains("abs") && n.contains("absolute")));
    assert!(rep
        .notes
        .iter()
        .any(|n| n.contains("sneaky") && n.contains("after a name")));
    assert_eq!(snapshot(&outside), outside_before);
    assert_eq!(mode_of(&outside), 0o600);
    assert_eq!(snapshot(&outside_dir), outside_dir_before);
    for (p, s) in etc_before {
        assert_eq!(stat_one(&p), s, "{p:?} was touched");
    }
}

#[test]
fn in_tree_symlink_is_kept_and_not_followed() {
    if !is_root() {
        eprintln!("skipped: needs root to create foreign groups");
        return;
    }
    let (tmp, root) = setup();
    mkdir(&root.join("sub"), 0o750);
    // Target already correct; the link itself has the wrong group.
    mkfile(&root.join("sub/x.iso"), 0o640);
    symlink("sub/x.iso", root.join("current")).unwrap();
    chgrp(&root.join("current"), 12345);
    // A second target that is wrong: fixed as its own entry, once.
    mkfile(&root.join("sub/y.iso"), 0o600);
    symlink("y.iso", root.join("sub/latest")).unwrap();
    settle(tmp.path());
    let x_before = stat_one(&root.join("sub/x.iso"));

    let rep = fix_tree(&root, &policy()).unwrap();

    assert_eq!(
        fs::read_link(root.join("current")).unwrap(),
        Path::new("sub/x.iso")
    );
    assert_eq!(owner_of(&root.join("current")), me());
    assert_eq!(
        stat_one(&root.join("sub/x.iso")),
        x_before,
        "target touched through link"
    );
    assert_eq!(mode_of(&root.join("sub/y.iso")), 0o640);
    assert_eq!(rep.changed, 2, "{:#?}", rep.notes);
    assert_eq!(rep.notes.iter().filter(|n| n.contains("y.iso")).count(), 1);
    assert!(rep
        .notes
        .iter()
        .any(|n| n.contains("current") && n.contains("owner")));
    // root, sub, x.iso, current, y.iso, latest
    assert_eq!(rep.entries, 6);
}

#[test]
fn symlinked_subdir_is_not_descended() {
    let (tmp, root) = setup();
    mkdir(&root.join("sub"), 0o750);
    mkfile(&root.join("sub/f"), 0o600);
    symlink("sub", root.join("alias")).unwrap();
    symlink("/etc", root.join("etc")).unwrap();
    let rep = fix_tree(&root, &policy()).unwrap();
    // root, sub, sub/f, alias: the file is seen once, not via alias.
    assert_eq!(rep.entries, 4);
    assert_eq!(rep.changed, 1);
    assert_eq!(rep.removed, 1);
    assert!(fs::symlink_metadata(root.join("alias"))
        .unwrap()
        .is_symlink());
    drop(tmp);
}

#[test]
fn fifos_sockets_and_devices_are_removed() {
    let (_tmp, root) = setup();
    mkdir(&root.join("sub"), 0o750);
    unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    let sock = root.join("sub/sock");
    drop(UnixListener::bind(&sock).unwrap());
    let mut expected = 2;
    let dev = root.join("null");
    // CAP_MKNOD may be missing in containers.
    if stat::mknod(
        &dev,
        stat::SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        stat::makedev(1, 3),
    )
    .is_ok()
    {
        expected += 1;
    }
    let rep = fix_tree(&root, &policy()).unwrap();
    assert_eq!(rep.removed, expected, "{:#?}", rep.notes);
    assert!(fs::symlink_metadata(root.join("fifo")).is_err());
    assert!(fs::symlink_metadata(&sock).is_err());
    assert!(fs::symlink_metadata(&dev).is_err());
    assert!(rep.notes.iter().any(|n| n.contains("removed fifo")));
    assert!(rep.notes.iter().any(|n| n.contains("removed socket")));
}

#[test]
fn rsync_leftovers_removed_and_syncgate_tmp_skipped() {
    let (tmp, root) = setup();
    let outside = tmp.path().join("keep");
    mkdir(&outside, 0o700);
    mkfile(&outside.join("precious"), 0o600);

    // depth 0
    let t0 = root.join(RSYNC_PARTIAL_DIR);
    mkdir(&t0, 0o700);
    mkdir(&t0.join("a"), 0o755);
    mkfile(&t0.join("a/part.iso"), 0o600);
    symlink(&outside, t0.join("a/out")).unwrap();
    mkdir(&t0.join("locked"), 0o000);
    // depth 2
    mkdir(&root.join("d1"), 0o750);
    mkdir(&root.join("d1/d2"), 0o750);
    let t2 = root.join("d1/d2").join(RSYNC_PARTIAL_DIR);
    mkdir(&t2, 0o500);
    // a file named like the partial dir is removed too: nobody's file
    mkfile(&root.join("d1").join(RSYNC_PARTIAL_DIR), 0o640);

    // top-level .syncgate-tmp: left alone entirely
    let st = root.join(TEMP_DIR);
    mkdir(&st, 0o777);
    mkfile(&st.join("inflight"), 0o666);
    symlink("/etc/passwd", st.join("escape")).unwrap();
    unistd::mkfifo(&st.join("fifo"), Mode::from_bits_truncate(0o666)).unwrap();
    // ... but only at the top level
    let nested = root.join("d1").join(TEMP_DIR);
    mkdir(&nested, 0o777);
    // and links must not route through it
    symlink(format!("{TEMP_DIR}/escape"), root.join("via-tmp")).unwrap();

    settle(tmp.path());
    let st_before = snapshot(&st);
    let outside_before = snapshot(&outside);

    let rep = fix_tree(&root, &policy()).unwrap();

    assert!(fs::symlink_metadata(&t0).is_err());
    assert!(fs::symlink_metadata(&t2).is_err());
    assert!(fs::symlink_metadata(root.join("via-tmp")).is_err());
    assert_eq!(snapshot(&st), st_before);
    assert_eq!(snapshot(&outside), outside_before);
    assert_eq!(mode_of(&nested), 0o750);
    assert!(fs::symlink_metadata(root.join("d1").join(RSYNC_PARTIAL_DIR)).is_err());
    // t0: .~tmp~, a, part.iso, out, locked = 5; t2 = 1; via-tmp = 1;
    // d1/.~tmp~ (file) = 1
    assert_eq!(rep.removed, 8, "{:#?}", rep.notes);
    assert!(rep
        .notes
        .iter()
        .any(|n| n.contains("removed rsync leftover directory (5 entries)")));
    // root, d1, d2, d1/.syncgate-tmp
    assert_eq!(rep.entries, 4);
}

#[test]
fn whatever_poses_as_the_private_dir_at_the_top_is_removed() {
    for plant in ["symlink", "file", "fifo"] {
        let (tmp, root) = setup();
        let outside = tmp.path().join("keep");
        mkdir(&outside, 0o755);
        mkfile(&outside.join("precious"), 0o644);
        let st = root.join(TEMP_DIR);
        match plant {
            "symlink" => symlink(&outside, &st).unwrap(),
            "file" => mkfile(&st, 0o600),
            _ => unistd::mkfifo(&st, Mode::from_bits_truncate(0o600)).unwrap(),
        }
        mkfile(&root.join(RSYNC_PARTIAL_DIR), 0o640);
        settle(tmp.path());
        let outside_before = snapshot(&outside);
        let rep = fix_tree(&root, &policy()).unwrap();
        assert!(
            fs::symlink_metadata(&st).is_err(),
            "{plant}: {:#?}",
            rep.notes
        );
        assert!(fs::symlink_metadata(root.join(RSYNC_PARTIAL_DIR)).is_err());
        assert_eq!(snapshot(&outside), outside_before, "{plant}");
        assert!(
            rep.notes
                .iter()
                .any(|n| n.contains("syncgate's private directory")),
            "{plant}: {:#?}",
            rep.notes
        );
    }
}

#[test]
fn symlinked_root_is_refused() {
    let (tmp, root) = setup();
    mkfile(&root.join("f"), 0o666);
    let link = tmp.path().join("link");
    symlink(&root, &link).unwrap();
    let err = fix_tree(&link, &policy()).unwrap_err();
    assert!(matches!(err, FixError::RootIsSymlink { .. }), "{err}");
    assert!(err.to_string().contains("link"));
    assert_eq!(mode_of(&root.join("f")), 0o666);

    let file = tmp.path().join("plain");
    mkfile(&file, 0o640);
    assert!(matches!(
        fix_tree(&file, &policy()),
        Err(FixError::RootNotDirectory { .. })
    ));
    assert!(matches!(
        fix_tree(&tmp.path().join("missing"), &policy()),
        Err(FixError::Io {
            errno: Errno::ENOENT,
            ..
        })
    ));
}

#[test]
fn policy_is_validated() {
    let ok = policy();
    ok.validate().unwrap();
    PermPolicy {
        dir_mode: 0o2750,
        ..ok
    }
    .validate()
    .unwrap();
    PermPolicy {
        file_mode: 0o755,
        dir_mode: 0o755,
        ..ok
    }
    .validate()
    .unwrap();
    for bad in [
        PermPolicy {
            file_mode: 0o660,
            ..ok
        },
        PermPolicy {
            file_mode: 0o642,
            ..ok
        },
        PermPolicy {
            file_mode: 0o4640,
            ..ok
        },
        PermPolicy {
            file_mode: 0o2640,
            ..ok
        },
        PermPolicy {
            file_mode: 0o1640,
            ..ok
        },
        PermPolicy {
            file_mode: 0o10640,
            ..ok
        },
        PermPolicy {
            dir_mode: 0o770,
            ..ok
        },
        PermPolicy {
            dir_mode: 0o757,
            ..ok
        },
        PermPolicy {
            dir_mode: 0o4750,
            ..ok
        },
        PermPolicy {
            dir_mode: 0o1750,
            ..ok
        },
        PermPolicy {
            dir_mode: 0o550,
            ..ok
        },
        PermPolicy {
            uid: u32::MAX,
            ..ok
        },
        PermPolicy {
            gid: u32::MAX,
            ..ok
        },
    ] {
        let err = FixError::from(bad.validate().unwrap_err());
        assert!(matches!(err, FixError::InvalidPolicy(_)), "{bad:?}");
        // fix_tree refuses before touching anything
        assert!(matches!(
            fix_tree(Path::new("/nonexistent"), &bad),
            Err(FixError::InvalidPolicy(_))
        ));
    }
}

#[test]
fn link_classification() {
    let d = |names: &[&str]| names.iter().map(OsString::from).collect::<Vec<_>>();
    let inside = |dir: &[&str], t: &str| link_escape_reason(&d(dir), OsStr::new(t)).is_none();
    assert!(inside(&[], "x.iso"));
    assert!(inside(&[], "sub/x.iso"));
    assert!(inside(&[], "./sub/./x.iso"));
    assert!(inside(&[], "."));
    assert!(inside(&["a"], ".."));
    assert!(inside(&["a"], "../b"));
    assert!(inside(&["a", "b"], "../../c/d"));
    assert!(inside(&["a"], "../.syncgate-tmp-not/x"));
    assert!(inside(&["a"], ".syncgate-tmp/x"), "nested name is ordinary");
    assert!(inside(&[], "sub//x/"));

    assert!(!inside(&[], "/etc/passwd"));
    assert!(!inside(&[], ""));
    assert!(!inside(&[], ".."));
    assert!(!inside(&[], "../x"));
    assert!(!inside(&[], "./../x"));
    assert!(!inside(&["a"], "../../x"));
    assert!(!inside(&["a", "b"], "../../../x"));
    assert!(!inside(&[], "sub/../x"), "'..' after a name");
    assert!(!inside(&[], "self/.."));
    assert!(!inside(&[], ".syncgate-tmp"));
    assert!(!inside(&[], "./.syncgate-tmp/x"));
    assert!(!inside(&["a"], "../.syncgate-tmp/x"));
}

fn foreign_owner(euid: u32) -> FixError {
    FixError::ForeignOwner {
        path: PathBuf::from("/srv/mirror/it's.iso"),
        cur_uid: 1001,
        cur_gid: 1002,
        want_uid: 2000,
        want_gid: 2001,
        euid,
    }
}

#[test]
fn foreign_owner_error_names_path_owner_and_fix() {
    let s = foreign_owner(2000).to_string();
    assert!(
        s.starts_with("\"/srv/mirror/it's.iso\": owned by 1001:1002, must be 2000:2001"),
        "{s}"
    );
    assert!(s.contains("EPERM"), "{s}");
    assert!(s.contains("runs as uid 2000"), "{s}");
    assert!(
        s.contains(r#"chown -h 2000:2001 -- '/srv/mirror/it'\''s.iso'"#),
        "{s}"
    );
    let s = foreign_owner(0).to_string();
    assert!(s.contains("although running as root"), "{s}");

    let many = FixError::Incomplete {
        root: PathBuf::from("/srv/mirror"),
        problems: vec![
            foreign_owner(2000),
            io(Path::new("/srv/mirror/x"), "chmod to 0640", Errno::EROFS),
        ],
        omitted: 7,
        report: Box::new(FixReport {
            entries: 10,
            changed: 3,
            removed: 1,
            notes: vec![],
        }),
    };
    let s = many.to_string();
    assert!(
        s.starts_with("fix-perms could not fix 9 problem(s) under \"/srv/mirror\""),
        "{s}"
    );
    assert!(
        s.contains("checked 10 entries, repaired 3, removed 1"),
        "{s}"
    );
    assert!(
        s.contains("\n  - \"/srv/mirror/it's.iso\": owned by 1001:1002"),
        "{s}"
    );
    assert!(
        s.contains("\n  - \"/srv/mirror/x\": chmod to 0640 failed: EROFS"),
        "{s}"
    );
    assert!(s.ends_with("\n  - ... 7 more"), "{s}");
}

#[test]
fn problems_are_collected_and_the_rest_is_fixed() {
    if !is_root() {
        eprintln!("skipped: needs root to create foreign owners");
        return;
    }
    let (tmp, root) = setup();
    // Hard links owned by someone else: refused, each reported.
    let outside = tmp.path().join("shadow");
    mkfile(&outside, 0o600);
    lchown(&outside, Some(12345), Some(12345)).unwrap();
    fs::hard_link(&outside, root.join("hl1")).unwrap();
    mkdir(&root.join("sub"), 0o777);
    fs::hard_link(&outside, root.join("sub/hl2")).unwrap();
    // Drift elsewhere is still repaired.
    mkfile(&root.join("sub/drift"), 0o666);
    // Hard links already owned by the policy owner are fine.
    mkfile(&root.join("own"), 0o644);
    fs::hard_link(root.join("own"), root.join("own2")).unwrap();

    let err = fix_tree(&root, &policy()).unwrap_err();
    let FixError::Incomplete {
        problems,
        omitted,
        report,
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(problems.len(), 2, "{err}");
    assert_eq!(*omitted, 0);
    assert!(problems
        .iter()
        .all(|p| matches!(p, FixError::ForeignHardlink { nlink: 3, .. })));
    let s = err.to_string();
    assert!(
        s.contains("hl1") && s.contains("hl2") && s.contains("12345:12345"),
        "{s}"
    );
    assert_eq!(owner_of(&outside), (12345, 12345));
    assert_eq!(mode_of(&outside), 0o600);
    assert_eq!(mode_of(&root.join("sub")), 0o750);
    assert_eq!(mode_of(&root.join("sub/drift")), 0o640);
    assert_eq!(mode_of(&root.join("own")), 0o640);
    // sub, sub/drift, own (own2 is the same inode: already right)
    assert_eq!(report.changed, 3, "{:#?}", report.notes);
}

#[test]
fn notes_are_capped() {
    let (_tmp, root) = setup();
    for i in 0..(MAX_NOTES + 50) {
        mkfile(&root.join(format!("f{i:03}")), 0o600);
    }
    let rep = fix_tree(&root, &policy()).unwrap();
    assert_eq!(rep.changed, MAX_NOTES as u64 + 50);
    assert_eq!(rep.notes.len(), MAX_NOTES + 1);
    assert_eq!(rep.notes.last().unwrap(), "... 50 more");
    assert!(rep.notes[0].contains("f000") && rep.notes[0].contains("mode 0600 -> 0640"));
}

#[test]
fn too_deep_is_reported() {
    let (_tmp, root) = setup();
    let mut p = root.clone();
    for _ in 0..(MAX_DEPTH + 1) {
        p.push("d");
        mkdir(&p, 0o750);
    }
    mkfile(&p.join("f"), 0o640);
    let err = fix_tree(&root, &policy()).unwrap_err();
    let FixError::Incomplete { problems, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(problems.len(), 1);
    assert!(matches!(problems[0], FixError::TooDeep { .. }), "{err}");
}

fn open_root(root: &Path) -> Dir {
    Dir::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn lstat_at(dir: &Dir, name: &str) -> FileStat {
    stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).unwrap()
}

#[test]
fn chmod_primitives_never_follow_symlinks() {
    let (tmp, root) = setup();
    let outside = tmp.path().join("target");
    mkfile(&outside, 0o600);
    mkfile(&root.join("f"), 0o600);
    symlink(&outside, root.join("link")).unwrap();
    let dir = open_root(&root);
    let fd = dir.as_fd();
    let m = Mode::from_bits_truncate(0o644);
    let link_st = lstat_at(&dir, "link");
    let f_st = lstat_at(&dir, "f");

    // The primary path refuses symlinks (glibc: EOPNOTSUPP) ...
    assert!(chmod_nofollow(fd, OsStr::new("link"), m, &link_st).is_err());
    // ... and so does the fallback.
    assert_eq!(
        chmod_via_fd(fd, OsStr::new("link"), m, &link_st),
        Err(Errno::ELOOP)
    );
    assert_eq!(mode_of(&outside), 0o600);

    // Both work on regular files.
    chmod_nofollow(fd, OsStr::new("f"), m, &f_st).unwrap();
    assert_eq!(mode_of(&root.join("f")), 0o644);
    chmod_via_fd(fd, OsStr::new("f"), Mode::from_bits_truncate(0o640), &f_st).unwrap();
    assert_eq!(mode_of(&root.join("f")), 0o640);

    // The fallback notices a replaced entry (kept alive under another
    // name so that its inode number is not reused).
    fs::rename(root.join("f"), root.join("f.old")).unwrap();
    mkfile(&root.join("f"), 0o600);
    assert_eq!(
        chmod_via_fd(fd, OsStr::new("f"), m, &f_st),
        Err(Errno::ESTALE)
    );
    assert_eq!(mode_of(&root.join("f")), 0o600);
}

#[test]
fn directory_swapped_for_symlink_is_not_entered() {
    let (tmp, root) = setup();
    let outside = tmp.path().join("elsewhere");
    mkdir(&outside, 0o700);
    mkdir(&root.join("d"), 0o750);
    let dir = open_root(&root);
    let st = lstat_at(&dir, "d");
    // Swap the directory for a symlink between stat and open (the old
    // one is kept so that its inode number is not reused).
    fs::rename(root.join("d"), root.join("d.old")).unwrap();
    symlink(&outside, root.join("d")).unwrap();
    let err = open_dir_at(dir.as_fd(), OsStr::new("d"), &root.join("d"), &st).unwrap_err();
    assert!(matches!(err, FixError::Raced { .. }), "{err}");
    // Swap for another directory: inode check catches it.
    fs::remove_file(root.join("d")).unwrap();
    mkdir(&root.join("d"), 0o750);
    let err = open_dir_at(dir.as_fd(), OsStr::new("d"), &root.join("d"), &st).unwrap_err();
    assert!(matches!(err, FixError::Raced { .. }), "{err}");
}

const UMASK_ENV: &str = "SYNCGATE_FIXPERMS_UMASK_CHILD";

/// Helper run in a child process by `umask_does_not_matter` (umask is
/// process-wide, so it must not change in the shared test process).
#[test]
#[ignore = "run via umask_does_not_matter"]
fn umask_child() {
    let Ok(mask) = std::env::var(UMASK_ENV) else {
        return;
    };
    let mask = u32::from_str_radix(&mask, 8).unwrap();
    stat::umask(Mode::from_bits_truncate(mask));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("m");
    fs::create_dir(&root).unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/f"), b"x").unwrap();
    fs::write(root.join("g"), b"x").unwrap();
    fix_tree(&root, &policy()).unwrap();
    for (p, m) in [("", 0o750), ("sub", 0o750), ("sub/f", 0o640), ("g", 0o640)] {
        assert_eq!(mode_of(&root.join(p)), m, "umask {mask:o}: {p}");
    }
    assert_eq!(fix_tree(&root, &policy()).unwrap().changed, 0);
}

#[test]
fn umask_does_not_matter() {
    if !is_root() {
        // Without root, a 0777 umask leaves unreadable fixtures.
        eprintln!("skipped: needs root");
        return;
    }
    for mask in ["777", "000", "022", "077"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "owner::fixperms::tests::umask_child",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env(UMASK_ENV, mask)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "umask {mask}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn wrong_user_is_refused_early() {
    if is_root() {
        // Root may manage any owner; the check only applies to others.
        return;
    }
    let pol = PermPolicy {
        uid: me().0 + 1,
        ..policy()
    };
    assert!(matches!(
        fix_tree(Path::new("/"), &pol),
        Err(FixError::WrongUser { .. })
    ));
}
