//! Checksum verification on real trees in temp dirs.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256, Sha512};
use tempfile::TempDir;

use super::sums::{hex, parse, Algo, MAX_LINE};
use super::{verify_tree, VerifyReport};
use crate::config::{Publish, VerifyMode};

pub(super) fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn sha512(data: &[u8]) -> String {
    hex(&Sha512::digest(data))
}

pub(super) fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

pub(super) fn publish(verify: VerifyMode) -> Publish {
    Publish {
        verify,
        ..Publish::default()
    }
}

/// A snapshot with images/{a.iso,b.iso} and images/SHA256SUMS listing both.
pub(super) fn good_tree() -> TempDir {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "images/a.iso", b"alpha");
    write(t.path(), "images/b.iso", b"bravo!");
    let sums = format!(
        "{}  a.iso\n{}  b.iso\n",
        sha256(b"alpha"),
        sha256(b"bravo!")
    );
    write(t.path(), "images/SHA256SUMS", sums.as_bytes());
    t
}

fn err(new: &Path, live: Option<&Path>, p: &Publish) -> String {
    verify_tree(new, live, p).unwrap_err().message
}

#[test]
fn a_good_tree_passes() {
    let t = good_tree();
    let r = verify_tree(t.path(), None, &Publish::default()).unwrap();
    assert_eq!(
        r,
        VerifyReport {
            checksum_files: 1,
            files_hashed: 2,
            bytes_hashed: 11,
            signatures: 0
        }
    );
}

#[test]
fn a_mismatch_names_the_file_the_checksum_file_and_both_hashes() {
    let t = good_tree();
    write(t.path(), "images/b.iso", b"tampered");
    let m = err(t.path(), None, &Publish::default());
    assert_eq!(
        m,
        format!(
            "images/b.iso: SHA-256 is {}, but images/SHA256SUMS says {}",
            sha256(b"tampered"),
            sha256(b"bravo!")
        )
    );
}

#[test]
fn a_missing_file_fails() {
    let t = good_tree();
    fs::remove_file(t.path().join("images/a.iso")).unwrap();
    let m = err(t.path(), None, &Publish::default());
    assert_eq!(m, "images/a.iso: listed in images/SHA256SUMS, but missing");
}

#[test]
fn names_that_leave_the_directory_fail() {
    let t = good_tree();
    write(t.path(), "x", b"outside");
    std::os::unix::fs::symlink("../x", t.path().join("images/link")).unwrap();
    let h = sha256(b"outside");
    let sums = format!("{h}  ../x\n{h}  /etc/passwd\n{h}  sub/../../x\n{h}  link\n");
    write(t.path(), "images/SHA256SUMS", sums.as_bytes());
    let m = err(t.path(), None, &Publish::default());
    assert!(m.starts_with("4 problems: "), "{m}");
    for how in ["a '..' component", "an absolute name", "through a symlink"] {
        assert!(m.contains(&format!("leaves the directory ({how})")), "{m}");
    }
    assert!(
        m.contains("images/../x: images/SHA256SUMS line 1 names"),
        "{m}"
    );
}

#[test]
fn a_symlink_inside_the_directory_is_followed() {
    let t = good_tree();
    std::os::unix::fs::symlink("a.iso", t.path().join("images/current.iso")).unwrap();
    let sums = format!("{}  current.iso\n", sha256(b"alpha"));
    write(t.path(), "images/SHA256SUMS", sums.as_bytes());
    let r = verify_tree(t.path(), None, &Publish::default()).unwrap();
    assert_eq!((r.files_hashed, r.bytes_hashed), (1, 5));
}

#[test]
fn bsd_tags_sha512_binary_markers_and_comments_parse() {
    let t = good_tree();
    let sums = format!(
        "# made by hand\n\nSHA256 (a.iso) = {}\n{} *b.iso\nSHA512 (a.iso) = {}\n",
        sha256(b"alpha"),
        sha512(b"bravo!").to_uppercase(),
        sha512(b"alpha")
    );
    write(t.path(), "images/SHA512SUMS", sums.as_bytes());
    fs::remove_file(t.path().join("images/SHA256SUMS")).unwrap();
    let r = verify_tree(t.path(), None, &Publish::default()).unwrap();
    assert_eq!(
        (r.checksum_files, r.files_hashed, r.bytes_hashed),
        (1, 2, 11)
    );
    write(t.path(), "images/a.iso", b"alphA");
    let m = err(t.path(), None, &Publish::default());
    assert!(
        m.starts_with("2 problems: images/a.iso: SHA-256 is "),
        "{m}"
    );
    assert!(m.contains("images/a.iso: SHA-512 is "), "{m}");
}

#[test]
fn coreutils_escaped_names_parse() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/new\nline", b"one");
    write(t.path(), "d/back\\slash", b"two");
    let sums = format!(
        "\\{}  new\\nline\n\\SHA256 (back\\\\slash) = {}\n",
        sha256(b"one"),
        sha256(b"two")
    );
    write(t.path(), "d/SHA256SUMS", sums.as_bytes());
    let r = verify_tree(t.path(), None, &Publish::default()).unwrap();
    assert_eq!(r.files_hashed, 2);
    write(t.path(), "d/new\nline", b"changed");
    let m = err(t.path(), None, &Publish::default());
    assert!(m.starts_with("d/new\\nline: SHA-256 is "), "{m}");
}

#[test]
fn junk_makes_the_checksum_file_invalid() {
    for junk in [
        &b"not a checksum\n"[..],
        b"abcd  short.iso\n",
        b"\x00\xff\xfe binary junk",
        b"SHA1 (a.iso) = 0123\n",
    ] {
        let t = good_tree();
        let mut sums = fs::read(t.path().join("images/SHA256SUMS")).unwrap();
        sums.extend_from_slice(junk);
        write(t.path(), "images/SHA256SUMS", &sums);
        let m = err(t.path(), None, &Publish::default());
        assert_eq!(
            m,
            "images/SHA256SUMS: not a valid checksum file: line 3 is not a SHA-256 or SHA-512 checksum line"
        );
    }
}

#[test]
fn hostile_input_is_bounded() {
    let long = vec![b'a'; MAX_LINE + 10];
    let e = parse(&long[..], None).unwrap_err();
    assert_eq!(e, "line 1 is longer than 64 KiB");
    let mut ok = vec![b'#'; MAX_LINE - 1];
    ok.push(b'\n');
    assert!(parse(&ok[..], None).unwrap().entries.is_empty());
    let junk: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(parse(&junk[..], None).is_err());
}

#[test]
fn a_clear_signed_file_is_parsed_from_its_signed_text() {
    let h = sha256(b"x");
    let msg = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{h}  a  \n- -dash\n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n\n"
    );
    let mut text = Vec::new();
    let s = parse(msg.as_bytes(), Some(&mut text)).unwrap_err();
    assert_eq!(s, "line 5 is not a SHA-256 or SHA-512 checksum line");
    let msg = msg.replace("- -dash", "- # a comment");
    text.clear();
    let s = parse(msg.as_bytes(), Some(&mut text)).unwrap();
    assert_eq!(s.entries.len(), 1);
    assert_eq!(
        (s.entries[0].algo, &s.entries[0].name[..]),
        (Algo::Sha256, &b"a"[..])
    );
    assert!(s
        .signature
        .unwrap()
        .starts_with(b"-----BEGIN PGP SIGNATURE-----\n"));
    assert_eq!(text, format!("{h}  a\n# a comment").into_bytes());
    let extra = format!("{msg}{h}  b\n");
    assert_eq!(
        parse(extra.as_bytes(), None).unwrap_err(),
        "line 11 follows the signature"
    );
    let cut = &msg[..msg.find("-----END").unwrap()];
    assert!(parse(cut.as_bytes(), None).is_err());
}

#[test]
fn a_clear_signed_tree_passes_without_a_signature_setting() {
    let t = good_tree();
    let body = fs::read_to_string(t.path().join("images/SHA256SUMS")).unwrap();
    let msg = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{body}-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    );
    write(t.path(), "images/SHA256SUMS", msg.as_bytes());
    let r = verify_tree(t.path(), None, &Publish::default()).unwrap();
    assert_eq!(r.files_hashed, 2);
}

/// A live tree and a new one that hard-links a.iso and SHA256SUMS from it.
fn live_and_new() -> (TempDir, TempDir) {
    let live = good_tree();
    let new = tempfile::tempdir().unwrap();
    fs::create_dir(new.path().join("images")).unwrap();
    for f in ["a.iso", "SHA256SUMS"] {
        let rel = format!("images/{f}");
        fs::hard_link(live.path().join(&rel), new.path().join(&rel)).unwrap();
    }
    write(new.path(), "images/b.iso", b"bravo!");
    (live, new)
}

#[test]
fn changed_mode_hashes_only_what_is_not_hard_linked() {
    let (live, new) = live_and_new();
    let p = Publish::default();
    let r = verify_tree(new.path(), Some(live.path()), &p).unwrap();
    assert_eq!((r.files_hashed, r.bytes_hashed), (1, 6));
    // Without a live snapshot everything is new.
    let r = verify_tree(new.path(), None, &p).unwrap();
    assert_eq!(r.files_hashed, 2);
    // A hard-linked file is trusted as verified before; a new one is not.
    write(new.path(), "images/b.iso", b"bad");
    let m = err(new.path(), Some(live.path()), &p);
    assert!(m.starts_with("images/b.iso: SHA-256 is "), "{m}");
}

#[test]
fn an_unchanged_checksum_file_listing_nothing_new_costs_no_hashing() {
    let (live, new) = live_and_new();
    fs::remove_file(new.path().join("images/b.iso")).unwrap();
    fs::hard_link(
        live.path().join("images/b.iso"),
        new.path().join("images/b.iso"),
    )
    .unwrap();
    let r = verify_tree(new.path(), Some(live.path()), &Publish::default()).unwrap();
    assert_eq!(
        r,
        VerifyReport {
            checksum_files: 1,
            ..Default::default()
        }
    );
}

#[test]
fn all_mode_hashes_everything() {
    let (live, new) = live_and_new();
    let r = verify_tree(new.path(), Some(live.path()), &publish(VerifyMode::All)).unwrap();
    assert_eq!((r.files_hashed, r.bytes_hashed), (2, 11));
}

#[test]
fn off_mode_does_nothing() {
    let t = good_tree();
    write(t.path(), "images/SHA256SUMS", b"junk\n");
    let r = verify_tree(t.path(), None, &publish(VerifyMode::Off)).unwrap();
    assert_eq!(r, VerifyReport::default());
    assert!(verify_tree(Path::new("/nonexistent"), None, &publish(VerifyMode::Off)).is_ok());
}

#[test]
fn patterns_the_temp_dir_and_many_failures() {
    let t = good_tree();
    write(t.path(), ".syncgate-tmp/SHA256SUMS", b"junk\n");
    write(
        t.path(),
        "deep/er/x.sha256",
        format!("{}  y\n", sha256(b"y")).as_bytes(),
    );
    write(t.path(), "deep/er/y", b"y");
    write(t.path(), "other.md5", b"junk\n");
    let r = verify_tree(t.path(), None, &Publish::default()).unwrap();
    assert_eq!((r.checksum_files, r.files_hashed), (2, 3));
    let sums: String = (0..8)
        .map(|i| format!("{}  m{i}\n", sha256(b"m")))
        .collect();
    write(t.path(), "deep/er/x.sha256", sums.as_bytes());
    let m = err(t.path(), None, &Publish::default());
    assert!(m.starts_with("8 problems: deep/er/m0: listed in"), "{m}");
    assert!(m.ends_with("; and 3 more"), "{m}");
}

/// Hashing speed on one 512 MiB file (page-cached), SHA-256 then SHA-512:
/// `cargo test --release --lib throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: writes 512 MiB"]
fn throughput() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let mut f = fs::File::create(t.path().join("big.iso")).unwrap();
    let chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut h256 = Sha256::new();
    let mut h512 = Sha512::new();
    for _ in 0..512 {
        f.write_all(&chunk).unwrap();
        h256.update(&chunk);
        h512.update(&chunk);
    }
    drop(f);
    let (a, b) = (hex(&h256.finalize()), hex(&h512.finalize()));
    for (name, line) in [
        ("SHA256SUMS", format!("{a}  big.iso\n")),
        ("SHA512SUMS", format!("{b}  big.iso\n")),
    ] {
        let _ = fs::remove_file(t.path().join("SHA256SUMS"));
        let _ = fs::remove_file(t.path().join("SHA512SUMS"));
        write(t.path(), name, line.as_bytes());
        let start = std::time::Instant::now();
        let r = verify_tree(t.path(), None, &Publish::default()).unwrap();
        let s = start.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {} bytes in {s:.3} s = {:.0} MiB/s",
            r.bytes_hashed,
            r.bytes_hashed as f64 / s / 1048576.0
        );
    }
}
