#!/usr/bin/env bash
# bench/observe.sh: a benchmark (not a test) of what the run history and the
# metrics file add to one run.
#
#   bench/observe.sh                          # results table on stdout
#   BENCH_ROUNDS=101 BENCH_MIRRORS=20 bench/observe.sh
#
# Three variants of the same no-change `syncgate sync` of one small mirror
# (its rsync dry run is the same for all three), run interleaved round by
# round (A B C, B C A, C A B, ...), one warmup round first:
#   base     syncgate built from BENCH_BASE (default: the merge base with
#            main), which writes neither history nor metrics
#   history  this tree without metrics_file: the history line is appended
#   metrics  this tree with metrics_file: history line + the metrics file for
#            every configured mirror (each mirror's state file and the end of
#            its history read, /proc/locks read, file written, fsynced,
#            renamed)
# BENCH_MIRRORS mirrors are configured (default 10). Every mirror starts
# with what a long-lived install has: 100 runs in its state file and a
# full history file (history_size, 1 MiB). The difference of the medians
# is what the variant adds; target: metrics - base <= 5 ms.
#
# Environment:
#   BENCH_DIR       work dir (default /tmp/syncgate-obsbench)
#   BENCH_ROUNDS    timed rounds (>= 11, default 61)
#   BENCH_MIRRORS   mirrors configured (>= 1, default 10)
#   BENCH_BASE      git revision for the base variant (default: merge-base HEAD main)
#   BENCH_BASE_BIN  a syncgate binary to use as base instead of building one
#   CARGO_TARGET_DIR respected by the build of this tree
#
# Runs as the current user (privilege = "direct"); needs cargo, rsync,
# python3 and git. Exit status: 0 when everything could be measured,
# whether or not the target was met (a miss is printed as MISS); non-zero
# only when something failed (build, a non-zero syncgate exit).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/tmp/syncgate-obsbench}
ROUNDS=${BENCH_ROUNDS:-61}
MIRRORS=${BENCH_MIRRORS:-10}
((ROUNDS >= 11)) || ROUNDS=11
((MIRRORS >= 1)) || MIRRORS=1

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}

say "building this tree (release)"
(cd "$top" && cargo build --release --quiet) || die "cargo build --release"
target=${CARGO_TARGET_DIR:-$top/target}
new_bin=$target/release/syncgate

if [[ -n ${BENCH_BASE_BIN:-} ]]; then
  base_bin=$BENCH_BASE_BIN
  base_rev="(BENCH_BASE_BIN)"
else
  base_rev=$(cd "$top" && git rev-parse --short "${BENCH_BASE:-$(git merge-base HEAD main)}")
  src=$W/base-src-$base_rev
  if [[ ! -x $W/base-target/release/syncgate || $(cat "$W/base-target/rev" 2>/dev/null) != "$base_rev" ]]; then
    say "building the base $base_rev (release) in $src"
    rm -rf "$src" && mkdir -p "$src"
    (cd "$top" && git archive "$base_rev") | tar -x -C "$src"
    (cd "$src" && CARGO_TARGET_DIR=$W/base-target cargo build --release --quiet) || die "build of $base_rev"
    echo "$base_rev" >"$W/base-target/rev"
  fi
  base_bin=$W/base-target/release/syncgate
fi

user=$(id -un)
group=$(id -gn)
rm -rf "$W/run"
mkdir -p "$W/run/up" "$W/run/srv" "$W/run/prom"
for i in $(seq 1 20); do printf 'file %s\n' "$i" >"$W/run/up/f$i.iso"; done

# One config per variant, each with its own state dir; the same dests.
write_config() { # VARIANT EXTRA_TOP_LEVEL_LINES
  local v=$1 extra=$2
  mkdir -p "$W/run/$v/state"
  chmod 0750 "$W/run/$v/state"
  {
    printf 'state_dir = "%s"\nprivilege = "direct"\n%s\n' "$W/run/$v/state" "$extra"
    printf '[syslog]\nsocket = "%s"\n\n' "$W/run/no-syslog"
    for m in $(seq 1 "$MIRRORS"); do
      printf '[mirror.m%s]\nupstream = "%s"\ndest = "%s"\nowner = "%s"\nreader_group = "%s"\n\n' \
        "$m" "$W/run/up" "$W/run/srv/m$m" "$user" "$group"
    done
  } >"$W/run/$v.toml"
}
write_config base ""
write_config history ""
write_config metrics "metrics_file = \"$W/run/prom/syncgate.prom\""

say "first syncs of $MIRRORS mirrors"
for m in $(seq 1 "$MIRRORS"); do
  "$new_bin" --config "$W/run/history.toml" sync "m$m" 2>/dev/null || die "first sync of m$m"
done

# A long-lived install: 100 runs in each state file, a full history.
say "filling each mirror's state file (100 runs) and history (1 MiB)"
python3 - "$W/run" "$MIRRORS" <<'EOF'
import json, sys, os
run, n = sys.argv[1], int(sys.argv[2])
for m in range(1, n + 1):
    name = f"m{m}"
    sp = f"{run}/history/state/{name}.state.json"
    st = json.load(open(sp))
    last = st["runs"][-1]
    runs, hist = [], []
    size, i = 0, 0
    while size < (1 << 20) - 2000:
        i += 1
        r = dict(last, run=i, started=last["started"] - 3600 * (3000 - i), ended=last["ended"] - 3600 * (3000 - i),
                 message="unchanged", requester="user=syncgate uid=998", request=f"r{i}")
        line = json.dumps(dict({"mirror": name}, **r), separators=(",", ":")) + "\n"
        hist.append(line)
        size += len(line)
        runs.append(r)
    runs = runs[-100:]
    st["runs"], st["last_started"] = runs, i
    st["last_success"] = runs[-1]["ended"]
    st["counts"] = {"runs": {"success": i}, "requests": i, "failures_in_row": 0}
    for v in ("base", "history", "metrics"):
        os.makedirs(f"{run}/{v}/state", exist_ok=True)
        with open(f"{run}/{v}/state/{name}.state.json", "w") as f:
            json.dump(st, f, indent=2)
        if v != "base":
            with open(f"{run}/{v}/state/{name}.history.jsonl", "w") as f:
                f.writelines(hist)
EOF

say "$ROUNDS rounds (+1 warmup) of 3 variants, interleaved"
python3 - "$W/run" "$ROUNDS" "$base_bin" "$new_bin" <<'EOF' >"$W/run/times.json"
import json, resource, subprocess, sys, time
run, rounds, base_bin, new_bin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
variants = {
    "base": [base_bin, "--config", f"{run}/base.toml", "sync", "m1"],
    "history": [new_bin, "--config", f"{run}/history.toml", "sync", "m1"],
    "metrics": [new_bin, "--config", f"{run}/metrics.toml", "sync", "m1"],
}
names = list(variants)
wall = {n: [] for n in names}
cpu = {n: [] for n in names}
def used():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
for r in range(rounds + 1):
    order = names[r % 3:] + names[:r % 3]
    for n in order:
        c = used()
        t = time.perf_counter_ns()
        p = subprocess.run(variants[n], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter_ns() - t
        dc = used() - c
        if p.returncode != 0:
            sys.stderr.write(p.stderr.decode())
            sys.exit(f"{n}: exit {p.returncode}")
        if r > 0:
            wall[n].append(dt / 1e6)
            cpu[n].append(dc * 1e3)
json.dump({"wall": wall, "cpu": cpu}, sys.stdout)
EOF

# The metrics file must have been written, and for every mirror.
prom=$W/run/prom/syncgate.prom
[[ -f $prom ]] || die "no metrics file"
written=$(grep -c '^syncgate_requests_total{' "$prom")
((written == MIRRORS)) || die "metrics file has $written mirrors, want $MIRRORS"
hist_lines=$(wc -l <"$W/run/history/state/m1.history.jsonl")
rotated=no
[[ -f $W/run/history/state/m1.history.jsonl.1 ]] && rotated=yes

python3 - "$W/run/times.json" "$ROUNDS" "$MIRRORS" "$base_rev" "$hist_lines" "$rotated" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, statistics, sys
data = json.load(open(sys.argv[1]))
wall, cpu = data["wall"], data["cpu"]
rounds, mirrors, base_rev, hist_lines, rotated, cpus, load = sys.argv[2:9]
def q(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
med = {n: statistics.median(v) for n, v in wall.items()}
cmed = {n: statistics.median(v) for n, v in cpu.items()}
print(f"`bench/observe.sh`: {rounds} interleaved rounds, {mirrors} mirrors configured, "
      f"base {base_rev}, {cpus} CPUs, load {load} at the end. History of m1 after the rounds: "
      f"{hist_lines} lines, rotated: {rotated}.\n")
print("| variant (no-change `syncgate sync`) | wall median | wall p25–p75 | wall min–max | cpu median (process tree) |")
print("|---|---|---|---|---|")
for n, label in [("base", "base: no history, no metrics"), ("history", "history line"),
                 ("metrics", f"history line + metrics file ({mirrors} mirrors)")]:
    v = wall[n]
    print(f"| {label} | {med[n]:.2f} ms | {q(v, .25):.2f}–{q(v, .75):.2f} ms | {min(v):.2f}–{max(v):.2f} ms | {cmed[n]:.2f} ms |")
print()
# Paired differences, round by round: steadier than a difference of medians.
def paired(d, a, b):
    return statistics.median([y - x for x, y in zip(d[a], d[b])])
rows = [("history − base", "history", "base"), ("metrics − history", "metrics", "history"),
        ("metrics − base (what a run pays)", "metrics", "base")]
print("| added per run | wall: difference of medians | wall: median of paired differences | cpu: median of paired differences | target | result |")
print("|---|---|---|---|---|---|")
for label, b, a in rows:
    d, p, c = med[b] - med[a], paired(wall, a, b), paired(cpu, a, b)
    target = "≤ 5 ms" if b == "metrics" and a == "base" else ""
    res = ("PASS" if p <= 5.0 else "MISS") if target else "info"
    print(f"| {label} | {d:+.2f} ms | {p:+.2f} ms | {c:+.2f} ms | {target} | {res} |")
EOF
