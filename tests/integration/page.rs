//! The status page, opened in a real browser: after real syncs through
//! ssh and sudo (a mirror synced twice, one failure whose rsync message carries a
//! hostile file name, one mirror never synced), headless Chromium renders
//! `index.html` at desktop and phone widths (the screenshots are kept under
//! `target/test-artifacts/page/`), its DOM names every mirror and its
//! state, the hostile name stays text, Chromium logs no console message,
//! and the phone layout does not scroll sideways. A deliberately broken
//! page first proves that the console and overflow checks can fail.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::host::set_mode;
use crate::support::mirror_host::MirrorHost;
use crate::support::{
    assert_contains, assert_lacks, bytes, e2e_test, opts, require_tool, show, stdout, Key, Mirrors,
};

/// Where the screenshots go: `target/test-artifacts/page/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts/page");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one headless Chromium run printed.
struct Browser {
    dom: String,
    log: String,
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, or
/// `--screenshot=…` and a window size), logging to stderr, with its own
/// profile in `profile`.
fn chromium(profile: &Path, args: &[&str], url: &str) -> Browser {
    let mut cmd = Command::new(require_tool("chromium"));
    cmd.args([
        "--headless",
        // As root, Chromium refuses to start with its sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--allow-file-access-from-files",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .env("HOME", profile);
    let out = cmd.output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}",
        show(&out)
    );
    Browser {
        dom: stdout(&out),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The lines in which Chromium reports something the page said or did
/// wrong (a script error, `console.*`, a resource that failed to load).
fn console_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

/// The widths the page is laid out at in a `width`-pixel wide frame:
/// (the viewport's, the document's). A wrapper page (test-only JavaScript)
/// loads `page` in an iframe of that width and writes both into its DOM.
fn layout_width(profile: &Path, page: &Path, width: u32) -> (u64, u64) {
    let wrapper = profile.join(format!("measure-{width}.html"));
    fs::write(
        &wrapper,
        format!(
            "<!DOCTYPE html><html><body><iframe id=\"f\" width=\"{width}\" height=\"8000\" src=\"file://{}\"></iframe><p id=\"r\">pending</p><script>
document.getElementById('f').addEventListener('load', function () {{
  var d = this.contentDocument.documentElement;
  document.getElementById('r').textContent = 'layout ' + d.clientWidth + ' ' + d.scrollWidth + ' end';
}});
</script></body></html>",
            page.display()
        ),
    )
    .unwrap();
    let b = chromium(
        profile,
        &["--virtual-time-budget=5000", "--dump-dom"],
        &format!("file://{}", wrapper.display()),
    );
    let r = b
        .dom
        .split("layout ")
        .nth(1)
        .and_then(|s| s.split(" end").next())
        .unwrap_or_else(|| panic!("the wrapper measured nothing: {}\n{}", b.dom, b.log));
    let mut n = r.split(' ').map(|v| v.parse::<u64>().unwrap());
    (n.next().unwrap(), n.next().unwrap())
}

/// The DOM's text: tags dropped, the few entities the page uses decoded.
fn text_of(dom: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in dom.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `status --json` without what changes from one second to the next.
fn steady(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("generated");
    for m in v["mirrors"].as_array_mut().unwrap() {
        m.as_object_mut().unwrap().remove("last_success_age");
    }
    v
}

e2e_test! {
    fn the_status_page_reads_in_a_real_browser_on_desktop_and_phone() {
        let key = Key {
            mirrors: vec!["iso", "broken", "fresh"],
            ..Key::jenkins()
        };
        let mut mh = MirrorHost::with(
            &[("iso", opts()), ("broken", opts()), ("fresh", opts())],
            &[key],
        );
        let www = mh.path("www/status");
        fs::create_dir_all(&www).unwrap();
        nix::unistd::chown(&www, Some(mh.login.uid.into()), Some(mh.login.gid.into())).unwrap();
        set_mode(&www, 0o755);
        mh.reconfigure(|c| c.status_page = Some(www.clone()));

        mh.put("iso", "images/debian-13.iso", &bytes(300_000, 1));
        mh.put("iso", "SHA256SUMS", b"0  images/debian-13.iso\n");
        // A file the owner cannot read, named like markup: rsync's error
        // message (the run's message) carries the name.
        let hostile = "<script>alert(1)</script>.iso";
        mh.put("broken", hostile, b"x");
        set_mode(&mh.upstream_dir("broken").join(hostile), 0o000);
        mh.put("broken", "ok.txt", b"fine");

        mh.ssh(Some("sync iso")).status(0).run();
        mh.put("iso", "images/debian-13.1.iso", &bytes(200_000, 2));
        mh.ssh(Some("sync iso")).status(0).run();
        mh.ssh(Some("sync broken"))
            .failure()
            .stderr_contains("alert(1)")
            .run();

        // Both files, written by the login account, 0644, nothing left over.
        let html = www.join("index.html");
        let json = www.join("status.json");
        for f in [&html, &json] {
            let md = fs::symlink_metadata(f).unwrap();
            assert!(md.file_type().is_file(), "{}", f.display());
            assert_eq!(md.uid(), mh.login.uid, "{}", f.display());
            assert_eq!(md.mode() & 0o7777, 0o644, "{}", f.display());
        }
        let mut names: Vec<_> = fs::read_dir(&www)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["index.html", "status.json"]);
        // status.json is what `status --json` prints.
        let status = mh.syncgate().args(["status", "--json"]).status(0).run();
        let printed: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
        assert_eq!(steady(written.clone()), steady(printed));
        let iso = written["mirrors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "iso")
            .unwrap();
        // rsync's "Total file size": the tree's, not what was sent.
        assert_eq!(iso["last_run"]["size"], 300_000 + 200_000 + 24);

        let profile = mh.path("chromium");
        fs::create_dir_all(&profile).unwrap();

        // The checks below can fail: a page with a script error and a
        // too-wide element trips both.
        let broken = profile.join("broken.html");
        fs::write(
            &broken,
            "<!DOCTYPE html><html><head><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
             <body><div style=\"width:1000px\">wide</div><script>no_such_function();</script></body></html>",
        )
        .unwrap();
        let b = chromium(&profile, &["--dump-dom"], &format!("file://{}", broken.display()));
        assert!(
            !console_lines(&b.log).is_empty(),
            "the console check must see a script error:\n{}",
            b.log
        );
        let (view, doc) = layout_width(&profile, &broken, 390);
        assert!(doc > view, "the overflow check must see a 1000px element: {view} {doc}");

        // The real page: its DOM, then screenshots at desktop and phone size.
        let url = format!("file://{}", html.display());
        let b = chromium(&profile, &["--dump-dom"], &url);
        assert_eq!(console_lines(&b.log), Vec::<&str>::new(), "{}", b.log);
        assert_lacks(&b.dom, "<script");
        assert_contains(&b.dom, "&lt;script&gt;alert(1)&lt;/script&gt;.iso");
        let text = text_of(&b.dom);
        for want in [
            "3 mirrors: 1 last synced successfully, 1 failing, 1 never synced.",
            " iso ",
            "✓ last run succeeded",
            "run #2 success: ",
            " broken ",
            "✗ last run failed",
            "run #1 failed: first sync failed: rsync exited 23 (partial transfer due to error)",
            "<script>alert(1)</script>.iso",
            " fresh ",
            "never synced",
            "No runs yet.",
            "Duration of the last 2 runs, oldest first: 2 succeeded (solid bars), 0 did not",
            "Duration of the last 1 run, oldest first: 0 succeeded (solid bars), 1 did not",
            "Generated ",
        ] {
            assert!(text.contains(want), "{want:?} is not in the page's text:\n{text}");
        }
        // Each mirror's card says its state.
        for name in ["iso", "broken", "fresh"] {
            let card = b
                .dom
                .split(&format!("<section id=\"m-{name}\">"))
                .nth(1)
                .and_then(|s| s.split("</section>").next())
                .unwrap_or_else(|| panic!("no card for {name}:\n{}", b.dom));
            assert_contains(card, "<dt>State</dt><dd>idle</dd>");
        }

        let shots = artifacts();
        for (label, w, h) in [("desktop", 1280, 900), ("phone", 390, 844)] {
            let png = shots.join(format!("status-{label}-{w}x{h}.png"));
            let _ = fs::remove_file(&png);
            let b = chromium(
                &profile,
                &[
                    &format!("--screenshot={}", png.display()),
                    &format!("--window-size={w},{h}"),
                    "--hide-scrollbars",
                ],
                &url,
            );
            assert_eq!(console_lines(&b.log), Vec::<&str>::new(), "{}", b.log);
            let md = fs::metadata(&png).unwrap_or_else(|e| panic!("{}: {e}\n{}", png.display(), b.log));
            assert!(md.len() > 5_000, "{} is {} bytes", png.display(), md.len());
            eprintln!("status page screenshot ({label}): {}", png.display());
        }

        // On a phone the page never scrolls sideways, long rsync messages
        // included.
        for width in [360, 390] {
            let (view, doc) = layout_width(&profile, &html, width);
            assert_eq!(view, width as u64);
            assert!(doc <= view, "at {width}px the page is {doc}px wide");
        }
    }
}
