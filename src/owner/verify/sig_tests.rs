//! Signature checks with the real gpgv and sqv, on keys and signatures
//! made by the real `sq` (no agent, nothing left running). The temp dirs
//! are root's 0700 dirs in the sticky /tmp (tests run as root), which the
//! trust rule accepts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::tests::{good_tree, publish, sha256, write};
use super::verify_tree;
use crate::config::{Publish, SignatureProgram, SignatureSpec, VerifyMode};

fn sq(args: &[&std::ffi::OsStr]) {
    let out = Command::new("sq")
        .args(args)
        .output()
        .expect("sq is missing: run scripts/install-test-deps");
    assert!(out.status.success(), "sq {args:?}: {out:?}");
}

/// A signing key and a keyring (binary certificate) holding its public key.
struct Key {
    dir: TempDir,
}

impl Key {
    fn new() -> Key {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("key.pgp");
        let c = dir.path().join("keyring.pgp");
        sq(&[
            "key".as_ref(),
            "generate".as_ref(),
            "--userid".as_ref(),
            "<mirror@example.org>".as_ref(),
            "--export".as_ref(),
            k.as_os_str(),
        ]);
        sq(&[
            "key".as_ref(),
            "extract-cert".as_ref(),
            "--binary".as_ref(),
            "-o".as_ref(),
            c.as_os_str(),
            k.as_os_str(),
        ]);
        Key { dir }
    }

    fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring.pgp")
    }

    /// Signs `file` into `out`: detached, or clear-signed.
    fn sign(&self, file: &Path, out: &Path, clear: bool) {
        let how = if clear {
            "--cleartext-signature"
        } else {
            "--detached"
        };
        sq(&[
            "sign".as_ref(),
            how.as_ref(),
            "--signer-key".as_ref(),
            self.dir.path().join("key.pgp").as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            file.as_os_str(),
        ]);
    }
}

fn with_sig(key: &Key, program: SignatureProgram, verify: VerifyMode) -> Publish {
    Publish {
        signature: Some(SignatureSpec {
            keyring: key.keyring(),
            program,
        }),
        ..publish(verify)
    }
}

const PROGRAMS: [SignatureProgram; 2] = [SignatureProgram::Gpgv, SignatureProgram::Sqv];

#[test]
fn detached_signatures_good_tampered_unknown_and_missing() {
    let key = Key::new();
    let stranger = Key::new();
    for prog in PROGRAMS {
        let p = with_sig(&key, prog, VerifyMode::Changed);
        let t = good_tree();
        let sums = t.path().join("images/SHA256SUMS");
        let m = verify_tree(t.path(), None, &p).unwrap_err().message;
        assert!(
            m.starts_with("images/SHA256SUMS: no signature: it is not clear-signed and has no .gpg, .sig, .asc, .sign beside it"),
            "{m}"
        );
        for ext in ["gpg", "sig", "asc", "sign"] {
            let sig = t.path().join(format!("images/SHA256SUMS.{ext}"));
            key.sign(&sums, &sig, false);
            let r = verify_tree(t.path(), None, &p).unwrap();
            assert_eq!((r.signatures, r.files_hashed), (1, 2), "{prog:?} .{ext}");
            fs::remove_file(&sig).unwrap();
        }
        key.sign(&sums, &t.path().join("images/SHA256SUMS.sig"), false);
        let mut body = fs::read(&sums).unwrap();
        body.extend_from_slice(b"# appended\n");
        fs::write(&sums, &body).unwrap();
        let m = verify_tree(t.path(), None, &p).unwrap_err().message;
        let name = prog.as_str();
        assert!(
            m.starts_with(&format!("images/SHA256SUMS: bad signature: {name} says: ")),
            "{m}"
        );
        let other = with_sig(&stranger, prog, VerifyMode::Changed);
        let t = good_tree();
        let sums = t.path().join("images/SHA256SUMS");
        key.sign(&sums, &t.path().join("images/SHA256SUMS.asc"), false);
        let m = verify_tree(t.path(), None, &other).unwrap_err().message;
        assert!(m.starts_with("images/SHA256SUMS: bad signature: "), "{m}");
        assert!(verify_tree(t.path(), None, &p).is_ok());
    }
}

#[test]
fn clear_signed_files_verify_with_both_programs() {
    let key = Key::new();
    let stranger = Key::new();
    for prog in PROGRAMS {
        let t = good_tree();
        let sums = t.path().join("images/SHA256SUMS");
        let plain = t.path().join("plain");
        fs::rename(&sums, &plain).unwrap();
        key.sign(&plain, &sums, true);
        assert!(fs::read_to_string(&sums)
            .unwrap()
            .starts_with("-----BEGIN PGP SIGNED MESSAGE-----"));
        let p = with_sig(&key, prog, VerifyMode::All);
        let r = verify_tree(t.path(), None, &p).unwrap();
        assert_eq!((r.signatures, r.files_hashed), (1, 2), "{prog:?}");
        let m = verify_tree(t.path(), None, &with_sig(&stranger, prog, VerifyMode::All))
            .unwrap_err()
            .message;
        assert!(m.starts_with("images/SHA256SUMS: bad signature: "), "{m}");
        // A changed hash inside the signed text breaks the signature.
        let body = fs::read_to_string(&sums).unwrap();
        let forged = body.replace(&sha256(b"alpha"), &sha256(b"evil"));
        fs::write(&sums, forged).unwrap();
        write(t.path(), "images/a.iso", b"evil");
        let m = verify_tree(t.path(), None, &p).unwrap_err().message;
        assert!(m.starts_with("images/SHA256SUMS: bad signature: "), "{m}");
    }
}

#[test]
fn unchanged_checksum_files_need_no_signature_check() {
    let key = Key::new();
    let live = good_tree();
    let new = tempfile::tempdir().unwrap();
    for rel in ["images/a.iso", "images/b.iso", "images/SHA256SUMS"] {
        fs::create_dir_all(new.path().join("images")).unwrap();
        fs::hard_link(live.path().join(rel), new.path().join(rel)).unwrap();
    }
    let p = with_sig(&key, SignatureProgram::Gpgv, VerifyMode::Changed);
    let r = verify_tree(new.path(), Some(live.path()), &p).unwrap();
    assert_eq!((r.signatures, r.files_hashed), (0, 0));
    // Under "all" the same (unsigned) file must be signed.
    let p = with_sig(&key, SignatureProgram::Gpgv, VerifyMode::All);
    assert!(verify_tree(new.path(), Some(live.path()), &p).is_err());
}

#[test]
fn a_keyring_others_could_replace_is_refused() {
    let key = Key::new();
    let open = tempfile::tempdir().unwrap();
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let ring = open.path().join("keyring.pgp");
    fs::copy(key.keyring(), &ring).unwrap();
    let mut p = with_sig(&key, SignatureProgram::Sqv, VerifyMode::Changed);
    p.signature.as_mut().unwrap().keyring = ring;
    let t = good_tree();
    let m = verify_tree(t.path(), None, &p).unwrap_err().message;
    assert!(
        m.contains("must be owned by root and not writable by group or others"),
        "{m}"
    );
    assert!(m.contains("a directory above the keyring"), "{m}");
}
