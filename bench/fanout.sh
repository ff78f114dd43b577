#!/usr/bin/env bash
# bench/fanout.sh: a benchmark (not a test) of the hub's fan-out (issue 13):
# one syncgate hub pushing N downstream syncgate hosts on this machine, one
# of them throttled, against a single push.
#
#   bench/fanout.sh                        # Markdown table on stdout
#   BENCH_RUNS=7 BENCH_DOWNSTREAMS=20 bench/fanout.sh
#
# Environment:
#   BENCH_DOWNSTREAMS    downstreams, the throttled one included (default 20)
#   BENCH_RUNS           measured rounds after one warmup (>= 3, default 5)
#   BENCH_MAX_PARALLEL   the hub's [hub] max_parallel (default: all of them)
#   BENCH_SLOW_BWLIMIT   KiB/s of the throttled downstream's pull; it pulls
#                        64 KiB per release (default 16, about 4 s)
#   BENCH_RECEIVER       syncgate (default) or null: the downstream keys run
#                        `true` (the slow one `sleep 4`): the hub's and ssh's
#                        cost alone, without 20 downstream syncs sharing the CPU
#   BENCH_RELEASE        1 = build and run the release profile (default: the
#                        debug build the tests use; a release build of the
#                        test binary takes minutes on 2 cores)
#   CARGO_TARGET_DIR     respected by the build
#
# How it measures: the network is the end-to-end harness of
# tests/integration/support/hub.rs, in a private mount + network namespace
# (as root): a hub (real sshd, sudo, accounts, snapshot publishing, an rsync
# daemon serving its tree) and N downstream hosts, each with its own sshd
# port, login account, image owner, config, state dir and dest, pulling tiny
# trees from the hub's rsync daemon. The measurement is the ignored test
# `hub::bench_fanout`; this script builds it and runs it.
# - Rounds are interleaved: single push (only one fast downstream in the
#   config), then the fan-out to all N, again and again; one warmup round;
#   median and min–max of the measured rounds.
# - Each round is one builder `ssh … sync iso` on the hub with cascade =
#   "wait"; a new release (a changed 64 KiB file and SHA256SUMS) each time.
# - Times come from the hub's audit lines as they arrive on its syslog
#   socket (polled every 5 ms): from the first push-start to each push-end.
# - The hub's footprint is sampled in the same loop: its login account's
#   processes (the gate and its ssh children) and the sum of their VmRSS.
#
# Exit status: 0 when everything could be measured, targets met or not
# (a miss is printed as MISS); non-zero when something failed.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ "$(id -u)" != 0 ]; then
    echo "bench/fanout.sh runs the namespace harness (sshd, sudo, accounts): run it as root" >&2
    exit 1
fi
profile=()
if [ "${BENCH_RELEASE:-0}" = 1 ]; then
    profile=(--release)
fi
cargo build -q "${profile[@]}" --tests >&2
export SYNCGATE_E2E_TIMEOUT=${SYNCGATE_E2E_TIMEOUT:-1800}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! cargo test -q "${profile[@]}" --test integration -- --ignored --exact \
    hub::bench_fanout --nocapture >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench/fanout.sh: the measurement failed (output above)" >&2
    exit 1
fi
# The per-round lines (stderr of the inner run), then the table.
grep -E '^(set-up|round )' "$log" | sort -u >&2 || true
awk '/^\| fan-out to/ {on=1} on && /^\|/ {print} on && !/^\|/ {exit}' "$log"
