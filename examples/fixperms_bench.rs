//! Runs `fix_tree` on a directory with the current uid/gid, files 0640 and
//! directories 0750, and prints the elapsed time and the report.
//!
//! `cargo run --release --example fixperms_bench -- DIR`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use syncgate::owner::fixperms::{fix_tree, PermPolicy};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fixperms_bench DIR");
        return ExitCode::from(2);
    };
    let policy = PermPolicy {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        file_mode: 0o640,
        dir_mode: 0o750,
    };
    let start = Instant::now();
    let result = fix_tree(&dir, &policy);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(r) => {
            println!(
                "fix_tree_ms={ms:.1} entries={} changed={} removed={} notes={}",
                r.entries,
                r.changed,
                r.removed,
                r.notes.len()
            );
            for n in r.notes.iter().take(5) {
                println!("note: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("fix_tree_ms={ms:.1} error");
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
