//! The SSH gate end to end: real sshd, real accounts, real sudo.

use std::time::Duration;

use crate::support::mirror_host::MirrorHost;
use crate::support::{self, e2e_test, fields};

e2e_test! {
    /// `ssh syncgate@host sync` runs a real sync as the image owner, and the
    /// audit trail has a decision line and an outcome line.
    fn a_good_sync_through_ssh() {
        let mut mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        mh.put("iso", "SHA256SUMS", b"x  a.iso\n");
        let out = mh.ssh(Some("sync")).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}\nsshd:\n{}", support::show(&out), mh.host.sshd().log());
        assert!(String::from_utf8_lossy(&out.stderr).contains("run #1 succeeded"), "{}", support::show(&out));
        assert!(out.stdout.is_empty(), "stdout is for machine output only");
        assert_eq!(std::fs::read(mh.dest("iso").join("a.iso")).unwrap(), b"image");
        let decision = mh.log.wait_for(|l| l.contains("event=decision"), Duration::from_secs(5)).unwrap();
        let d = fields(&decision);
        assert_eq!(d["key"], "jenkins");
        assert_eq!(d["client"], "127.0.0.1");
        assert_eq!(d["decision"], "allow");
        let outcome = mh.log.wait_for(|l| l.contains("event=outcome"), Duration::from_secs(5)).unwrap();
        let o = fields(&outcome);
        assert_eq!(o["result"], "success");
        assert_eq!(o["request"], d["request"]);
    }
}
