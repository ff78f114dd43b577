#!/usr/bin/env bash
# Benchmark: the SSH gate's own overhead (no sshd in the loop).
#
#   bench/gate.sh                # 200 runs per case
#   RUNS=500 bench/gate.sh
#
# Runs `syncgate --config CFG ssh --key jenkins` directly with
# SSH_ORIGINAL_COMMAND and SSH_CONNECTION set, as sshd would, for
#   (a) a refused request  `sync; id`  (syslog socket missing, and with a
#       real receiving syslog socket: connecting to syslog is part of the cost)
#   (b) `status` and `status --json`
# next to two other forced-command gates refusing the same request:
#   rrsync   (shipped with rsync)   rrsync -ro DIR
#   authprogs (PyPI)                authprogs --run --keyname x --configfile YAML
# Wall time per invocation from hyperfine (or a `date +%s%N` loop of RUNS
# runs without it), peak RSS from `/usr/bin/time -f %M` (max of 5 runs).
# Prints a Markdown table. Target: syncgate refusing is >= 10x faster than
# rrsync and < 5 ms (medians; exits 1 when missed).
#
# Needs: cargo, rsync (rrsync), python3; optional: hyperfine, GNU time
# (`apt-get install -y hyperfine time`). authprogs is taken from PATH or
# $AUTHPROGS, else installed once into a venv under the cargo target dir.
# Everything else lives in a temporary directory removed at exit. Honours
# CARGO_TARGET_DIR.
set -euo pipefail

RUNS=${RUNS:-200}
WARMUP=${WARMUP:-20}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}

(cd "$repo" && cargo build --quiet --release)
syncgate=$target/release/syncgate

rrsync=$(command -v rrsync || echo /usr/bin/rrsync)
[[ -x $rrsync ]] || { echo "rrsync not found (it ships with rsync)" >&2; exit 1; }

authprogs=${AUTHPROGS:-$(command -v authprogs || true)}
if [[ -z $authprogs ]]; then
    venv=$target/bench-venv
    if [[ ! -x $venv/bin/authprogs ]]; then
        echo "installing authprogs into $venv ..." >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet authprogs
    fi
    authprogs=$venv/bin/authprogs
fi

gnu_time=""
if /usr/bin/time -f %M true >/dev/null 2>&1; then gnu_time=/usr/bin/time; fi
have_hyperfine=""
if command -v hyperfine >/dev/null; then have_hyperfine=1; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gate-bench.XXXXXX")
syslog_pid=""
cleanup() {
    if [[ -n $syslog_pid ]]; then kill "$syslog_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# ---- a throwaway syncgate config: direct privilege, local upstream
user=$(id -un)
group=$(id -gn)
mkdir -p "$work/upstream/iso" "$work/dest" "$work/state" "$work/rrsync-dir"
printf 'image' >"$work/upstream/iso/a.iso"
write_config() { # $1: syslog socket path
    cat >"$work/syncgate.toml" <<EOF
state_dir = "$work/state"
privilege = "direct"

[syslog]
socket = "$1"

[mirror.iso]
upstream = "$work/upstream/iso"
dest = "$work/dest/iso"
owner = "$user"
reader_group = "$group"

[key.jenkins]
verbs = ["sync", "status", "help"]
mirrors = ["iso"]
from = ["127.0.0.0/8"]
EOF
}
write_config "$work/no-such-syslog.sock"
cfg=$work/syncgate.toml
# One real sync, so that `status` has a state file and a last run to show.
"$syncgate" --config "$cfg" sync iso 2>/dev/null

cat >"$work/authprogs.yaml" <<EOF
- keynames: [x]
  allow:
    - command: sync
EOF

# A receiving syslog socket (datagram, drained by a small python process).
cat >"$work/syslogd.py" <<'EOF'
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
open(path + ".ready", "w").close()
with open(path + ".log", "ab", buffering=0) as log:
    while True:
        log.write(s.recv(65536).rstrip(b"\n") + b"\n")
EOF
python3 "$work/syslogd.py" "$work/syslog.sock" &
syslog_pid=$!
for _ in $(seq 100); do [[ -e $work/syslog.sock.ready ]] && break; sleep 0.05; done

export SSH_CONNECTION="127.0.0.1 50000 127.0.0.1 22"

# ---- cases: label | SSH_ORIGINAL_COMMAND | syslog socket | command...
labels=() ; cmds=() ; origs=() ; socks=()
add() { labels+=("$1"); origs+=("$2"); socks+=("$3"); shift 3; cmds+=("$*"); }
add "syncgate: refuse \`sync; id\` (no syslog)"   'sync; id'      "$work/no-such-syslog.sock" "$syncgate --config $cfg ssh --key jenkins"
add "syncgate: refuse \`sync; id\` (syslog)"      'sync; id'      "$work/syslog.sock"         "$syncgate --config $cfg ssh --key jenkins"
add "syncgate: \`status\` (syslog)"               'status'        "$work/syslog.sock"         "$syncgate --config $cfg ssh --key jenkins"
add "syncgate: \`status --json\` (syslog)"        'status --json' "$work/syslog.sock"         "$syncgate --config $cfg ssh --key jenkins"
add "rrsync -ro: refuse \`sync; id\`"             'sync; id'      ""                          "$rrsync -ro $work/rrsync-dir"
add "authprogs: refuse \`sync; id\`"              'sync; id'      ""                          "$authprogs --run --keyname x --configfile $work/authprogs.yaml"

mean_ms=() ; sd_ms=() ; med_ms=() ; min_ms=() ; rss_kib=() ; codes=()
now_ns() { date +%s%N; }
for i in "${!labels[@]}"; do
    [[ -n ${socks[$i]} ]] && write_config "${socks[$i]}"
    export SSH_ORIGINAL_COMMAND="${origs[$i]}"
    read -r -a argv <<<"${cmds[$i]}"
    set +e
    "${argv[@]}" >/dev/null 2>&1
    codes+=("$?")
    set -e
    if [[ -n $have_hyperfine ]]; then
        hyperfine -N -i --warmup "$WARMUP" --runs "$RUNS" --style none \
            --export-json "$work/h$i.json" "${cmds[$i]}" >/dev/null 2>&1
        read -r m s med n < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print("%.2f %.2f %.2f %.2f" % (r["mean"] * 1e3, r["stddev"] * 1e3, r["median"] * 1e3, r["min"] * 1e3))' "$work/h$i.json")
    else
        for ((w = 0; w < WARMUP; w++)); do "${argv[@]}" >/dev/null 2>&1 || true; done
        : >"$work/t$i"
        for ((r = 0; r < RUNS; r++)); do
            t=$(now_ns)
            "${argv[@]}" >/dev/null 2>&1 || true
            echo $(( $(now_ns) - t )) >>"$work/t$i"
        done
        read -r m s med n < <(python3 -c '
import statistics, sys
v = [int(l) / 1e6 for l in open(sys.argv[1])]
print(f"{statistics.mean(v):.2f} {statistics.stdev(v):.2f} {statistics.median(v):.2f} {min(v):.2f}")' "$work/t$i")
    fi
    mean_ms+=("$m"); sd_ms+=("$s"); med_ms+=("$med"); min_ms+=("$n")
    if [[ -n $gnu_time ]]; then
        peak=0
        for _ in 1 2 3 4 5; do
            k=$({ $gnu_time -f %M "${argv[@]}" 2>&1 >/dev/null || true; } | tail -n 1)
            if ((k > peak)); then peak=$k; fi
        done
        rss_kib+=("$peak")
    else
        rss_kib+=("n/a")
    fi
done
unset SSH_ORIGINAL_COMMAND

rr=${mean_ms[4]}
echo
echo "Gate overhead per request ($(if [[ -n $have_hyperfine ]]; then echo "hyperfine -N, $RUNS runs, $WARMUP warm-up"; else echo "date +%s%N loop, $RUNS runs"; fi); $(nproc) cores; $(uname -r))"
echo
echo "| request | exit | mean ms | ± ms | median ms | min ms | peak RSS KiB | mean vs rrsync |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for i in "${!labels[@]}"; do
    x=$(python3 -c "print(f'{$rr / ${mean_ms[$i]}:.1f}x')")
    echo "| ${labels[$i]} | ${codes[$i]} | ${mean_ms[$i]} | ${sd_ms[$i]} | ${med_ms[$i]} | ${min_ms[$i]} | ${rss_kib[$i]} | $x |"
done
echo
echo "syslog receiver got $(grep -c 'event=decision' "$work/syslog.sock.log" || true) decision lines (the (syslog) rows really sent them)."
# The verdict uses medians: on a shared machine the mean carries other
# processes' noise (see ±); the mean is in the table too.
verdict=$(python3 -c "
sg = max(${med_ms[0]}, ${med_ms[1]})
rr = ${med_ms[4]}
ok = sg * 10 <= rr and sg < 5
print(('PASS' if ok else 'FAIL') + f': syncgate refusing takes {sg:.2f} ms median (target < 5 ms), {rr / sg:.1f}x faster than rrsync (target >= 10x)')")
echo "$verdict"
[[ $verdict == PASS* ]]
