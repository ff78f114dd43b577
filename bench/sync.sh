#!/usr/bin/env bash
# bench/sync.sh: a benchmark (not a test) of `syncgate sync` against plain
# rsync on a local tree of 50,000 small files plus 3 x 64 MiB.
#
#   bench/sync.sh                               # results table on stdout
#   BENCH_DIR=/var/tmp/sg BENCH_RUNS=7 bench/sync.sh
#
# Environment:
#   BENCH_DIR            work dir (cached upstream tree, dests, logs);
#                        default /tmp/syncgate-bench. Needs ~15 GB free: every
#                        first-sync run gets its own never-used dest (see below).
#   BENCH_RUNS           timed rounds for the first-sync comparison (>= 3, default 5)
#   BENCH_NOOP_RUNS      timed rounds for the no-change comparison (>= 3, default 11)
#   BENCH_BURST          concurrent requests in the burst (default 50)
#   BENCH_BURST_BWLIMIT  KiB/s for the burst mirror, so that its first run
#                        takes a few seconds (default 40000)
#   BENCH_PROFILE        1 = always run the breakdowns, 0 = never; default:
#                        only for a missed timing target
#   BENCH_NO_INSTALL     1 = never try `apt-get install` (hyperfine, time)
#   CARGO_TARGET_DIR     respected by the build
#
# How it measures (see bench/README.md for the why):
# - Compared commands run interleaved, round by round (A B A B ...), one
#   warmup round first, median reported; on a shared machine this spreads
#   background noise over both sides instead of loading it onto one.
#   hyperfine (if present) times the 50-run no-op gate measurements.
# - First syncs go into a fresh directory per run instead of `rm -rf` of the
#   previous one: ext4 without a journal refuses to reuse an inode for 60 s
#   after it was freed (fs/ext4/ialloc.c, recently_deleted()), and creating
#   50,000 files right after deleting 50,000 makes inode allocation scan
#   and dominate the run (3 s vs 30 s for the same rsync -a).
# - Everything runs as the current user (privilege = "direct"), no sudo.
# - What `syncgate sync` runs (src/owner/): into an empty dest, one rsync
#   pass into a private staging copy (DEST/.syncgate-tmp/fresh), fix-perms on
#   that copy inside `transfer`, then renames (src/owner/publish.rs); no separate
#   fix-perms step. Into a dest that holds a mirror, first the plan: one
#   dry run over everything while dest is counted (src/owner/plan.rs); when it
#   proves nothing changed, that is all. Otherwise stage 1, the probe,
#   stage 2 and fix-perms, as before. So a first sync is one rsync pass plus
#   a fix-perms walk of the new copy, and a no-change sync is one dry run.
#   The breakdowns time these alone, with argvs rebuilt here and checked
#   against strace.
#
# Exit status: 0 when everything could be measured, whether or not the
# targets were met (misses are printed as MISS); non-zero only when something
# actually failed (build, a non-zero syncgate exit, a wrong tree).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/tmp/syncgate-bench}
RUNS=${BENCH_RUNS:-5}
NOOP_RUNS=${BENCH_NOOP_RUNS:-11}
BURST_N=${BENCH_BURST:-50}
BURST_BWLIMIT=${BENCH_BURST_BWLIMIT:-40000}
PROFILE=${BENCH_PROFILE:-auto}
((RUNS >= 3)) || RUNS=3
((NOOP_RUNS >= 3)) || NOOP_RUNS=3

# Shape of the generated upstream. Changing it regenerates the cache.
N_DIRS=500
N_FILES=100
N_BIG=3
BIG_MIB=64
GEN_ID="v1 dirs=$N_DIRS files=$N_FILES big=${N_BIG}x${BIG_MIB}MiB"

# Mirrors the defaults of src/config/ (file_mode, dir_mode, io_timeout,
# max_delete, last) and src/owner/dest.rs (TEMP_DIR, relative: rsync resolves it
# against dest); the rebuilt argvs are checked against what syncgate really
# executes (strace), see "the exact rsync argvs" below.
FILE_MODE=0640
DIR_MODE=2750
IO_TIMEOUT=600
MAX_DELETE=1000
TEMP_DIR=.syncgate-tmp
LAST=('SHA256SUMS*' 'SHA512SUMS*' 'MD5SUMS*' '*.sign' '*.sig' '*.asc' '*.gpg' '*.json' 'current')

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
q() { printf '%q' "$1"; }

# NOW = wall clock in microseconds (no fork when bash has EPOCHREALTIME).
stamp() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    NOW=${EPOCHREALTIME/[.,]/}
  else
    NOW=$(($(date +%s%N) / 1000))
  fi
}
# CPU_T = user+sys clock ticks of this shell's reaped children (whole trees).
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_now() {
  local line f
  read -r line <"/proc/$BASHPID/stat"
  read -ra f <<<"${line##*) }"
  CPU_T=$((f[13] + f[14]))
}

# Floating point helpers.
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.2f\n", a / b }'; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a - b }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
us2s() { awk -v a="$1" 'BEGIN { printf "%.3f\n", a / 1e6 }'; }
fmt_s() { awk -v a="$1" 'BEGIN { printf "%.3f s\n", a }'; }
fmt_ms() { awk -v a="$1" 'BEGIN { printf "%.2f ms\n", a * 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

try_install() { # try_install PACKAGE: best effort, root + apt-get only
  [[ ${BENCH_NO_INSTALL:-0} == 1 ]] && return 1
  [[ $(id -u) == 0 ]] && have apt-get || return 1
  say "installing $1 with apt-get (set BENCH_NO_INSTALL=1 to skip)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null 2>&1 && return 0
  apt-get update -qq >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null 2>&1
}

# ---- tools ---------------------------------------------------------------------
have rsync || try_install rsync || die "rsync is required"
RSYNC=$(command -v rsync)
have hyperfine || try_install hyperfine || say "hyperfine not available: timing the no-ops with a bash loop"
HYPERFINE=0
have hyperfine && HYPERFINE=1
[[ -x /usr/bin/time ]] || try_install time || say "/usr/bin/time not available: no peak RSS"
STRACE=0
have strace && STRACE=1
[[ -r /proc/$$/stat ]] || die "/proc is required"

# ---- build ---------------------------------------------------------------------
say "building (cargo build --release)"
build_json=$(cd "$top" && cargo build --release --message-format=json-render-diagnostics) ||
  die "cargo build --release"
bin=$(printf '%s\n' "$build_json" | grep -o '"executable":"[^"]*/syncgate"' | tail -n1 | cut -d'"' -f4)
[[ -n $bin && -x $bin ]] || die "cannot find the syncgate binary in cargo's output"
say "binary: $bin"

# ---- work dir, upstream ----------------------------------------------------------
mkdir -p "$W"
W=$(cd "$W" && pwd)
UP=$W/upstream
LOGS=$W/logs
RES=$W/results
FIRST=$W/first # one never-used dest per first-sync run; removed at the end
rm -rf "$LOGS" "$RES"
mkdir -p "$LOGS" "$RES"
SG_LOG=$LOGS/syncgate.stderr
RS_LOG=$LOGS/rsync.stderr
: >"$SG_LOG"
: >"$RS_LOG"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ext4 without a journal will not reuse an inode freed less than 60 s ago
# (300 s while its inode table block is dirty), and new inodes then have to
# scan past them: creating 50,000 files shortly after deleting 50,000 is
# several times slower. So big deletions are stamped, and the first-sync
# measurements wait until the last one is 300 s old (ext4 only).
forget_first() {
  if [[ -e $FIRST ]]; then
    say "removing the first-sync dests of an earlier run"
    rm -rf "$FIRST"
    sync
    date +%s >"$W/first.deleted"
  fi
}
wait_inodes_settled() {
  [[ -f $W/first.deleted ]] || return 0
  [[ $(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo ext4) == ext4 ]] || return 0
  local left=$(($(cat "$W/first.deleted") + 300 - $(date +%s)))
  if ((left > 0)); then
    say "waiting ${left}s: inodes freed by the last run of this script slow down ext4 inode allocation for 300 s"
    sleep "$left"
  fi
}
forget_first

gen_upstream() {
  if [[ -f $W/upstream.done && $(cat "$W/upstream.done") == "$GEN_ID" ]]; then
    say "reusing the cached upstream tree $UP ($GEN_ID)"
    return
  fi
  say "generating $UP: $N_DIRS dirs x $N_FILES files of 1-4 KiB, $N_BIG x $BIG_MIB MiB"
  if [[ -e $UP ]] || compgen -G "$W/dest-*" >/dev/null; then
    rm -rf "$UP" "$W"/dest-* "$W/state"
    sync
    date +%s >"$W/first.deleted"
  fi
  rm -f "$W/upstream.done"
  mkdir -p "$UP/pool" "$UP/images"
  # One random 8 KiB text blob; every small file is a distinct slice of it
  # with its own number in front, written by bash builtins (no fork per file).
  local blob d f i size off dir
  blob=$(head -c 6144 /dev/urandom | base64 -w0)
  for ((d = 0; d < N_DIRS; d++)); do
    dir=$(printf '%s/pool/d%03d' "$UP" "$d")
    mkdir "$dir"
    for ((f = 0; f < N_FILES; f++)); do
      i=$((d * N_FILES + f))
      size=$((1024 + (i * 2654435761) % 3073))
      off=$((i % 4096))
      printf '%08d\n%s' "$i" "${blob:off:size-9}" >"$dir/f$f.dat"
    done
  done
  for ((f = 1; f <= N_BIG; f++)); do
    head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom >"$UP/images/big-$f.iso"
  done
  (cd "$UP" && sha256sum images/*.iso >SHA256SUMS)
  printf '{"release": "bench", "files": %d, "generated": %d}\n' \
    "$((N_DIRS * N_FILES + N_BIG))" "$(date +%s)" >"$UP/release.json"
  sync
  printf '%s\n' "$GEN_ID" >"$W/upstream.done"
}
gen_upstream
N_UP_FILES=$(find "$UP" -type f | wc -l)
UP_BYTES=$(du -sb "$UP" | cut -f1)
say "upstream: $N_UP_FILES files, $UP_BYTES bytes"

# ---- config ---------------------------------------------------------------------
ETC=$W/etc
STATE=$W/state
D_RS=$W/dest-rsync
D_SG=$W/dest-syncgate
D_BURST=$W/dest-burst
OWNER=$(id -un)
GROUP=$(id -gn)
mkdir -p "$ETC"
chmod 0750 "$W" "$ETC"

write_config() { # write_config FILE STATE_DIR BENCH_DEST
  cat >"$1" <<TOML
# Generated by bench/sync.sh. Everything runs as $OWNER; nothing needs root.
state_dir = "$2"
privilege = "direct"
rsync = "$RSYNC"
heartbeat = 5

[syslog]
# No syslog: audit lines fall back to stderr, which goes to $SG_LOG.
socket = "$W/no-syslog-here"

[mirror.bench]
upstream = "$UP"
dest = "$3"
owner = "$OWNER"
reader_group = "$GROUP"
# The in-place route; bench/snapshot.sh measures snapshots.
publish = "two-stage"

[mirror.burst]
upstream = "$UP"
dest = "$D_BURST"
owner = "$OWNER"
reader_group = "$GROUP"
publish = "two-stage"
bwlimit = $BURST_BWLIMIT
TOML
}
CFG=$ETC/syncgate.toml
write_config "$CFG" "$STATE" "$D_SG"

SG=$(q "$bin")
SG_SYNC="$SG --config $(q "$CFG") sync bench 2>>$(q "$SG_LOG")"
RS_COPY="$(q "$RSYNC") -a $(q "$UP/") $(q "$D_RS/") 2>>$(q "$RS_LOG")"

# The rsync argvs of `syncgate transfer` (src/owner/rsync/argv.rs: rsync_plan,
# rsync_fresh, rsync_stage1, rsync_probe, rsync_stage2), for a given dest.
stage_argvs() { # stage_argvs DEST: sets PLAN, FRESH, STAGE1, PROBE and STAGE2 (full)
  local dest=$1 l
  local base=("$RSYNC" -rlpt --safe-links --no-human-readable --stats
    "--chmod=D$DIR_MODE,F$FILE_MODE" --group "--groupmap=*:$GROUP"
    "--timeout=$IO_TIMEOUT")
  local common=("${base[@]}" "--temp-dir=$TEMP_DIR" "--exclude=/$TEMP_DIR/")
  PLAN=("${common[@]}" --dry-run --itemize-changes --info=name1 "$UP/" "$dest/")
  FRESH=("${base[@]}" "--exclude=/$TEMP_DIR/" --delete "$UP/" "$dest/$TEMP_DIR/fresh/")
  STAGE1=("${common[@]}" --delete --max-delete=0)
  for l in "${LAST[@]}"; do STAGE1+=("--exclude=$l"); done
  STAGE1+=("$UP/" "$dest/")
  PROBE=("${common[@]}" --dry-run --itemize-changes --delete '--include=*/')
  for l in "${LAST[@]}"; do PROBE+=("--include=$l"); done
  PROBE+=('--exclude=*' "$UP/" "$dest/")
  STAGE2=("${common[@]}" --delay-updates --delete-delay "--max-delete=$MAX_DELETE" "$UP/" "$dest/")
}
qargv() { # a shell-quoted command line
  local a out=()
  for a in "$@"; do out+=("$(q "$a")"); done
  printf '%s' "${out[*]}"
}
without() { # without WORD ARGV...: the argv minus one exact word
  local drop=$1 a out=()
  shift
  for a in "$@"; do [[ $a == "$drop" ]] || out+=("$a"); done
  qargv "${out[@]}"
}

# ---- timing ---------------------------------------------------------------------
# bench_loop ROUNDS NAME...: runs CMD[NAME] (after PREP[NAME], untimed) for
# every NAME in turn, ROUNDS + 1 times; round 0 is a warmup and is dropped.
# "@i@" in a command or prepare is replaced by the round number. Results:
# WALL[NAME] / CPU[NAME] = medians in seconds, MIN[NAME] / MAX[NAME] (wall).
declare -A CMD PREP WALL CPU MIN MAX
bench_loop() {
  local rounds=$1 r name cmd prep t0 c0
  shift
  for name in "$@"; do : >"$RES/$name.tsv"; done
  for ((r = 0; r <= rounds; r++)); do
    for name in "$@"; do
      cmd=${CMD[$name]//@i@/$r}
      prep=${PREP[$name]:-}
      prep=${prep//@i@/$r}
      if [[ -n $prep ]]; then bash -c "$prep" || die "$name: prepare failed: $prep"; fi
      cpu_now
      c0=$CPU_T
      stamp
      t0=$NOW
      bash -c "$cmd" || die "$name: failed (round $r; see $SG_LOG, $RS_LOG): $cmd"
      stamp
      cpu_now
      ((r == 0)) || printf '%s\t%s\n' "$((NOW - t0))" "$((CPU_T - c0))" >>"$RES/$name.tsv"
    done
  done
  for name in "$@"; do
    WALL[$name]=$(cut -f1 "$RES/$name.tsv" | median | awk '{ printf "%.4f\n", $1 / 1e6 }')
    CPU[$name]=$(cut -f2 "$RES/$name.tsv" | median | awk -v t="$CLK_TCK" '{ printf "%.3f\n", $1 / t }')
    MIN[$name]=$(cut -f1 "$RES/$name.tsv" | sort -n | head -n1 | awk '{ printf "%.3f\n", $1 / 1e6 }')
    MAX[$name]=$(cut -f1 "$RES/$name.tsv" | sort -n | tail -n1 | awk '{ printf "%.3f\n", $1 / 1e6 }')
    say "  $name: median $(fmt_s "${WALL[$name]}") wall, ${CPU[$name]} s cpu (runs ${MIN[$name]}..${MAX[$name]} s)"
  done
}
cell() { # cell NAME: "0.300 s (cpu 0.22 s; 0.28–0.35)"
  printf '%s (cpu %s s; runs %s–%s)' "$(fmt_s "${WALL[$1]}")" "${CPU[$1]}" "${MIN[$1]}" "${MAX[$1]}"
}

# state_runs MIRROR [STATE_DIR]: "last_started N", then "run ID SERVED RESULT"
# per finished run (serde_json's pretty layout of MIRROR.state.json).
state_runs() {
  local f=${2:-$STATE}/$1.state.json
  [[ -f $f ]] || return 0
  awk '
    /^  "last_started":/ { gsub(/[ ,]/, "", $2); print "last_started", $2 }
    /^      "run":/ { gsub(/[ ,]/, "", $2); run = $2 }
    /^      "result":/ { gsub(/[ ,"]/, "", $2); result = $2 }
    /^      "served":/ { gsub(/[ ,]/, "", $2); print "run", run, $2, result }
  ' "$f"
}
last_started() { state_runs "$@" | awk '$1 == "last_started" { print $2 }'; }
last_result() { state_runs "$@" | awk '$1 == "run" { r = $4 } END { print r }'; }

verify_tree() { # verify_tree DEST: same files as upstream, checksums good
  local dest=$1 n
  n=$(find "$dest" -path "$dest/$TEMP_DIR" -prune -o -type f -print | wc -l)
  [[ $n == "$N_UP_FILES" ]] || die "$dest has $n files, upstream $N_UP_FILES"
  (cd "$dest" && sha256sum --quiet -c SHA256SUMS) || die "$dest: SHA256SUMS does not verify"
  cmp -s "$UP/release.json" "$dest/release.json" || die "$dest/release.json differs"
}

say "warming the page cache with the upstream tree"
find "$UP" -type f -print0 | xargs -0 cat >/dev/null

# stage2_decisions FROM_LINE: which way the runs logged to $SG_LOG after
# line FROM_LINE went (src/owner/ progress lines)
FRESH_MSG='first sync: dest is empty'
UNCHANGED_MSG='unchanged: the mirror matches upstream'
S2_FULL_MSG='stage 2: everything'
S2_SKIP_MSG='stage 2: no checksum file or marker changed upstream'
stage2_decisions() {
  local from=$1 fresh unchanged full skip
  fresh=$(tail -n "+$((from + 1))" "$SG_LOG" | grep -cF "$FRESH_MSG" || true)
  unchanged=$(tail -n "+$((from + 1))" "$SG_LOG" | grep -cF "$UNCHANGED_MSG" || true)
  full=$(tail -n "+$((from + 1))" "$SG_LOG" | grep -cF "$S2_FULL_MSG" || true)
  skip=$(tail -n "+$((from + 1))" "$SG_LOG" | grep -cF "$S2_SKIP_MSG" || true)
  printf '%s first-sync copies, %s unchanged, %s two-stage with full stage 2, %s two-stage without' \
    "$fresh" "$unchanged" "$full" "$skip"
}
log_lines() { wc -l <"$SG_LOG"; }

# ---- 1. first sync into an empty dest -------------------------------------------
wait_inodes_settled
mkdir -p "$FIRST"
for ((r = 0; r <= RUNS; r++)); do
  write_config "$FIRST/sg-$r.toml" "$FIRST/state-$r" "$FIRST/sg-$r"
done
say "first sync into an empty dest: $RUNS rounds (+1 warmup), interleaved"
CMD[first_rsync]="$(q "$RSYNC") -a $(q "$UP/") $(q "$FIRST")/rs-@i@/ 2>>$(q "$RS_LOG")"
PREP[first_rsync]=sync
CMD[first_syncgate]="$SG --config $(q "$FIRST")/sg-@i@.toml sync bench 2>>$(q "$SG_LOG")"
PREP[first_syncgate]=sync
from=$(log_lines)
bench_loop "$RUNS" first_rsync first_syncgate
S2_FIRST=$(stage2_decisions "$from")
for ((r = 0; r <= RUNS; r++)); do
  [[ $(last_result bench "$FIRST/state-$r") == success ]] ||
    die "first sync #$r did not record a success (see $SG_LOG)"
done
verify_tree "$FIRST/rs-$RUNS"
verify_tree "$FIRST/sg-$RUNS"

# ---- 2. no-change resync --------------------------------------------------------
# The no-change copies are kept between runs of this script (deleting them
# would slow down later first syncs, see above); bring them up to date.
say "preparing up-to-date copies for the no-change comparison"
"$RSYNC" -a "$UP/" "$D_RS/" 2>>"$RS_LOG" || die "rsync -a into $D_RS"
"$bin" --config "$CFG" sync bench 2>>"$SG_LOG" >/dev/null || die "syncgate sync bench"
verify_tree "$D_RS"
verify_tree "$D_SG"
say "no-change resync: $NOOP_RUNS rounds (+1 warmup), interleaved"
CMD[noop_rsync]=$RS_COPY
CMD[noop_syncgate]=$SG_SYNC
from=$(log_lines)
bench_loop "$NOOP_RUNS" noop_rsync noop_syncgate
S2_NOOP=$(stage2_decisions "$from")
[[ $(last_result bench) == success ]] || die "the last no-change run did not succeed (see $SG_LOG)"

# ---- 3. gate overhead for a no-op -----------------------------------------------
ST_CMD="$SG --config $(q "$CFG") status"
declare -A OP
for k in status status_json; do
  c=$ST_CMD
  [[ $k == status_json ]] && c+=" --json"
  if ((HYPERFINE)); then
    say "timing \`$c\` (hyperfine, 50 runs)"
    hyperfine -N --runs 50 --warmup 5 --style basic --export-json "$RES/$k.json" "$c" \
      >>"$LOGS/hyperfine.txt" 2>&1 || die "$c failed"
    OP[$k]=$(sed -n 's/^ *"median": *\([-0-9.eE+]*\),\{0,1\} *$/\1/p' "$RES/$k.json" | head -n1)
  else
    say "timing \`$c\` (bash loop, 50 runs)"
    CMD[$k]="$c >/dev/null"
    bench_loop 50 "$k"
    OP[$k]=${WALL[$k]}
  fi
done
rss() { # rss COMMAND...: peak RSS (KiB) of the process tree
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'
  else
    echo "n/a"
  fi
}
RSS_STATUS=$(rss "$bin" --config "$CFG" status)
RSS_JSON=$(rss "$bin" --config "$CFG" status --json)
RSS_SYNC=$(rss "$bin" --config "$CFG" sync bench)

# ---- 4. burst -------------------------------------------------------------------
say "burst: priming $D_BURST (bwlimit = $BURST_BWLIMIT KiB/s)"
"$bin" --config "$CFG" sync burst 2>>"$SG_LOG" >/dev/null || die "priming the burst mirror"
say "burst: one no-change sync of the burst mirror, for reference"
CMD[burst_noop]="$SG --config $(q "$CFG") sync burst 2>>$(q "$SG_LOG")"
bench_loop 3 burst_noop
# The next run must copy 2 x 64 MiB again, at bwlimit: a few seconds.
rm -f "$D_BURST/images/big-1.iso" "$D_BURST/images/big-2.iso"
BD=$W/burst
rm -rf "$BD"
mkdir -p "$BD"
B_BEFORE=$(last_started burst)
B_BEFORE=${B_BEFORE:-0}
say "burst: starting one sync, then $BURST_N concurrent requests while it runs"
(
  stamp
  s=$NOW
  rc=0
  "$bin" --config "$CFG" sync burst 2>"$BD/initial.err" >/dev/null || rc=$?
  stamp
  echo "$s $NOW $rc" >"$BD/initial.t"
) &
init_pid=$!
running=0 # wait until the run is recorded as running: what requests see
for ((i = 0; i < 600; i++)); do
  if "$bin" --config "$CFG" status burst --json 2>/dev/null | grep -q '"state": "running"'; then
    running=1
    break
  fi
  sleep 0.05
done
((running)) || die "burst: the first sync never showed as running (see $BD/initial.err)"
pids=()
for ((i = 1; i <= BURST_N; i++)); do
  (
    stamp
    s=$NOW
    rc=0
    "$bin" --config "$CFG" sync burst 2>"$BD/$i.err" >/dev/null || rc=$?
    stamp
    echo "$s $NOW $rc" >"$BD/$i.t"
  ) &
  pids+=("$!")
done
stamp
LAUNCHED_US=$NOW
INFLIGHT=yes
[[ -f $BD/initial.t ]] && INFLIGHT=no
for p in "${pids[@]}"; do wait "$p" || true; done
wait "$init_pid" || true
B_AFTER=$(last_started burst)
read -r I_S I_E I_RC <"$BD/initial.t"
B_RCS=("$I_RC")
B_BAD=0
B_MAX_LAT=0
((I_RC == 0)) || B_BAD=$((B_BAD + 1))
for ((i = 1; i <= BURST_N; i++)); do
  [[ -f $BD/$i.t ]] || die "burst: request $i left no record"
  read -r s e rc <"$BD/$i.t"
  B_RCS+=("$rc")
  ((rc == 0)) || B_BAD=$((B_BAD + 1))
  ((e - s > B_MAX_LAT)) && B_MAX_LAT=$((e - s))
  if ((i == BURST_N)); then
    B_LAST_S=$s
    B_LAST_E=$e
  fi
done
B_RUNS=$((B_AFTER - B_BEFORE))
B_SERVED=$(state_runs burst | awk -v b="$B_BEFORE" '$1 == "run" && $2 > b { printf "%s#%s served %s (%s)", sep, $2, $3, $4; sep = ", " }')
B_SERVED_SUM=$(state_runs burst | awk -v b="$B_BEFORE" '$1 == "run" && $2 > b { n += $3 } END { print n + 0 }')
B_CODES=$(printf '%s\n' "${B_RCS[@]}" | sort -n | uniq -c | awk '{ printf "%s%d × exit %s", sep, $1, $2; sep = ", " }')
B_BY_RUN=$(cat "$BD"/[0-9]*.err | grep -oE 'served by run #[0-9]+|run #[0-9]+ (succeeded|FAILED|timeout|aborted)' |
  grep -oE '#[0-9]+' | sort | uniq -c | awk '{ printf "%s%d by run %s", sep, $1, $2; sep = ", " }')
B_INIT_DUR=$(us2s "$((I_E - I_S))")
B_LAST_LAT=$(us2s "$((B_LAST_E - B_LAST_S))")
B_MAX_LAT=$(us2s "$B_MAX_LAT")
B_WAIT_INFLIGHT=$(us2s "$((I_E - B_LAST_S))")
B_AFTER_INFLIGHT=$(us2s "$((B_LAST_E - I_E))")
B_LAUNCH_SPAN=$(us2s "$((LAUNCHED_US - I_S))")
say "burst: runs used $B_RUNS ($B_SERVED); exit codes: $B_CODES"

# ---- the exact rsync argvs syncgate runs ----------------------------------------
# Two `syncgate sync bench` runs under strace (execve only): one with nothing
# changed (expected: the plan alone) and one after a last file
# (release.json) got an old mtime in dest (expected: plan, stage 1, probe,
# full stage 2, fix-perms). Each exec is labelled by comparing it with the
# rebuilt argvs.
stage_argvs "$D_SG"
strace_form() { # the argv as strace prints it: "a", "b", ...
  local out
  out=$(printf '"%s", ' "$@")
  printf '%s' "${out%, }"
}
traced_sequence() { # traced_sequence TAG: the labelled execs of one sync
  local out=$LOGS/strace-execve-$1.txt line args seq=()
  local e0 e1 ep e2
  e0=$(strace_form "${PLAN[@]}")
  e1=$(strace_form "${STAGE1[@]}")
  ep=$(strace_form "${PROBE[@]}")
  e2=$(strace_form "${STAGE2[@]}")
  strace -f -qq -s 4096 -e trace=execve -o "$out" \
    "$bin" --config "$CFG" sync bench 2>>"$SG_LOG" >/dev/null || die "sync under strace"
  while IFS= read -r line; do
    args=$(sed 's/^.*execve("[^"]*", \[\(.*\)\], 0x.*$/\1/' <<<"$line")
    case $args in
      "$e0") seq+=(plan) ;;
      "$e1") seq+=("stage 1") ;;
      "$ep") seq+=(probe) ;;
      "$e2") seq+=("stage 2") ;;
      "\"$RSYNC\""*) seq+=("OTHER-RSYNC") ;;
      *'"sync", "bench"') seq+=(sync) ;;
      *'"transfer", "bench"') seq+=(transfer) ;;
      *'"fix-perms", "bench"') seq+=(fix-perms) ;;
      *) seq+=("OTHER") ;;
    esac
  done < <(grep -E 'execve\("[^"]*", \[' "$out")
  local IFS='>'
  printf '%s' "${seq[*]}" | sed 's/>/ → /g'
}
ARGV_CHECK="not checked (no strace)"
if ((STRACE)); then
  want_noop="sync → transfer → plan"
  want_last="sync → transfer → plan → stage 1 → probe → stage 2 → fix-perms"
  seq_noop=$(traced_sequence noop)
  touch -d @1000000000 "$D_SG/release.json"
  seq_last=$(traced_sequence last)
  verify_tree "$D_SG"
  if [[ $seq_noop == "$want_noop" && $seq_last == "$want_last" ]]; then
    ARGV_CHECK="identical to what syncgate executed (strace: no change = $seq_noop; a last file changed = $seq_last)"
  else
    ARGV_CHECK="MISMATCH with what syncgate executed (no change: $seq_noop; a last file changed: $seq_last; see $LOGS/strace-execve-*.txt)"
    say "warning: the rebuilt rsync argvs differ from what syncgate ran: $seq_noop / $seq_last"
  fi
fi

# ---- verdicts -------------------------------------------------------------------
R_FIRST=$(fdiv "${WALL[first_syncgate]}" "${WALL[first_rsync]}")
R_FIRST_CPU=$(fdiv "${CPU[first_syncgate]}" "${CPU[first_rsync]}")
R_NOOP=$(fdiv "${WALL[noop_syncgate]}" "${WALL[noop_rsync]}")
R_NOOP_CPU=$(fdiv "${CPU[noop_syncgate]}" "${CPU[noop_rsync]}")
verdict() { if le "$1" "$2"; then echo PASS; else echo MISS; fi; }
V_FIRST=$(verdict "$R_FIRST" 1.05)
V_NOOP=$(verdict "$R_NOOP" 1.20)
V_RUNS=$(verdict "$B_RUNS" 2)
if ((B_BAD == 0)); then V_CODES=PASS; else V_CODES=FAIL; fi

# ---- breakdowns -----------------------------------------------------------------
prof_noop=0
prof_first=0
case $PROFILE in
  1 | always) prof_noop=1 prof_first=1 ;;
  0 | never) ;;
  *)
    [[ $V_NOOP == MISS ]] && prof_noop=1
    [[ $V_FIRST == MISS ]] && prof_first=1
    ;;
esac
stats_count() { # stats_count CMD: stat-family syscalls of the whole tree
  ((STRACE)) || {
    echo "n/a"
    return
  }
  bash -c "strace -f -c -o $(q "$LOGS/strace-c.txt") $1 >/dev/null 2>>$(q "$RS_LOG")" || true
  awk '$NF ~ /^(newfstatat|lstat|stat|fstat|statx|fstatat64)$/ { n += $4 } END { print n + 0 }' \
    "$LOGS/strace-c.txt"
}
PROF=()
row() { # row LABEL NAME [REFERENCE_NAME]
  local ref=${3:-noop_syncgate}
  PROF+=("| $1 | $(fmt_s "${WALL[$2]}") | ${CPU[$2]} s | $(awk -v a="${WALL[$2]}" -v b="${WALL[$ref]}" 'BEGIN { printf "%.0f%%", 100 * a / b }') | ${STATS[$2]:-} |")
}
declare -A STATS
sum_of() { # sum_of NAME...: sum of the WALL (or CPU with CPU=1) medians
  local n t=0
  for n in "$@"; do
    if [[ ${SUM_CPU:-0} == 1 ]]; then t=$(awk -v a="$t" -v b="${CPU[$n]}" 'BEGIN { printf "%.3f", a + b }')
    else t=$(awk -v a="$t" -v b="${WALL[$n]}" 'BEGIN { printf "%.4f", a + b }'); fi
  done
  printf '%s\n' "$t"
}
derive() { # derive NAME A MINUS...: WALL/CPU[NAME] = A − sum(MINUS)
  local name=$1 a=$2
  shift 2
  WALL[$name]=$(awk -v a="${WALL[$a]}" -v b="$(sum_of "$@")" 'BEGIN { printf "%.4f\n", a - b }')
  CPU[$name]=$(awk -v a="${CPU[$a]}" -v b="$(SUM_CPU=1 sum_of "$@")" 'BEGIN { printf "%.3f\n", a - b }')
}
sum_to() { # sum_to NAME PART...: WALL/CPU[NAME] = sum(PART)
  local name=$1
  shift
  WALL[$name]=$(sum_of "$@")
  CPU[$name]=$(SUM_CPU=1 sum_of "$@")
}
if ((prof_noop)); then
  say "breakdown of the no-change resync: $NOOP_RUNS rounds (+1 warmup), interleaved"
  stage_argvs "$D_SG"
  SPLAN=$(qargv "${PLAN[@]}")
  S1=$(qargv "${STAGE1[@]}")
  SP=$(qargv "${PROBE[@]}")
  S2=$(qargv "${STAGE2[@]}")
  FP="$SG --config $(q "$CFG") fix-perms bench"
  CMD[p_sync]=$SG_SYNC
  CMD[p_rsync]=$RS_COPY
  CMD[p_transfer]="$SG --config $(q "$CFG") transfer bench </dev/null >/dev/null 2>>$(q "$SG_LOG")"
  CMD[p_plan]="$SPLAN >/dev/null 2>>$(q "$RS_LOG")"
  CMD[p_count]="find $(q "$D_SG") >/dev/null"
  CMD[p_fixperms]="$FP </dev/null >/dev/null 2>>$(q "$SG_LOG")"
  CMD[p_stage1]="$S1 >/dev/null 2>>$(q "$RS_LOG")"
  CMD[p_probe]="$SP >/dev/null 2>>$(q "$RS_LOG")"
  CMD[p_stage2]="$S2 >/dev/null 2>>$(q "$RS_LOG")"
  # transfer creates DEST/.syncgate-tmp and removes it when it is done; the
  # rsyncs run alone need it (rsync refuses a missing --temp-dir), the
  # walks should not see it. Like transfer, put dest's mtime back each
  # time: a changed mtime on "./" is a change to the plan.
  keep_mtime() { printf 't=$(stat -c %%y %s) && { %s; } && touch -m -d "$t" %s' "$(q "$D_SG")" "$1" "$(q "$D_SG")"; }
  mk_tmp=$(keep_mtime "mkdir -p -m 700 $(q "$D_SG/$TEMP_DIR")")
  rm_tmp=$(keep_mtime "{ rmdir $(q "$D_SG/$TEMP_DIR") 2>/dev/null || true; }")
  for n in p_plan p_stage1 p_probe p_stage2; do PREP[$n]=$mk_tmp; done
  for n in p_fixperms p_count p_sync p_transfer; do PREP[$n]=$rm_tmp; done
  bench_loop "$NOOP_RUNS" p_sync p_rsync p_transfer p_plan p_count p_fixperms p_stage1 p_probe p_stage2
  say "counting stat calls (strace -c)"
  STATS[p_rsync]=$(stats_count "$RS_COPY")
  bash -c "$mk_tmp"
  STATS[p_plan]=$(stats_count "$SPLAN")
  STATS[p_stage1]=$(stats_count "$S1")
  STATS[p_probe]=$(stats_count "$SP")
  STATS[p_stage2]=$(stats_count "$S2")
  bash -c "$rm_tmp"
  STATS[p_transfer]=$(stats_count "$SG --config $(q "$CFG") transfer bench </dev/null")
  STATS[p_fixperms]=$(stats_count "$FP")
  STATS[p_count]=$(stats_count "find $(q "$D_SG")")
  derive p_gate p_sync p_transfer
  derive p_tr_own p_transfer p_plan
  sum_to p_changed p_plan p_stage1 p_probe p_stage2 p_fixperms
  PROF+=("| no-change resync | wall (median) | cpu | share of \`syncgate sync\` | stat calls |")
  PROF+=("|---|---|---|---|---|")
  row "\`syncgate sync\` (same rounds as below; routes in the comparison above: $S2_NOOP)" p_sync p_sync
  row "↳ \`syncgate transfer\` (owner side)" p_transfer p_sync
  row "&nbsp;&nbsp;↳ the plan rsync alone: \`--dry-run --itemize-changes --info=name1\` over everything" p_plan p_sync
  row "&nbsp;&nbsp;↳ transfer's own overhead (transfer − plan; dest is counted while the plan runs)" p_tr_own p_sync
  row "↳ gate (sync − transfer: config, queue lock, state, 1 spawn)" p_gate p_sync
  row "plain \`rsync -a\` (reference)" p_rsync p_sync
  row "reference: a names-only walk of dest, \`find DEST\` (what the count does, in a thread)" p_count p_sync
  row "not in a no-change sync: stage 1 (\`--delete --max-delete=0\`)" p_stage1 p_sync
  row "not in a no-change sync: the probe over the last files" p_probe p_sync
  row "not in a no-change sync: full stage 2" p_stage2 p_sync
  row "not in a no-change sync: \`syncgate fix-perms\`" p_fixperms p_sync
  row "what a sync that changed one last file costs at least (plan + stage 1 + probe + stage 2 + fix-perms, alone)" p_changed p_sync
fi
if ((prof_first)); then
  say "breakdown of the first sync: $RUNS rounds (+1 warmup), interleaved"
  for ((r = 0; r <= RUNS; r++)); do
    mkdir -p "$FIRST/st-$r/$TEMP_DIR"
    chmod 700 "$FIRST/st-$r/$TEMP_DIR"
    write_config "$FIRST/sg2-$r.toml" "$FIRST/sg2-state-$r" "$FIRST/sg2-$r"
    # fix-perms pointed at the staging copy: the walk transfer runs on it
    write_config "$FIRST/st-$r.toml" "$FIRST/st-state-$r" "$FIRST/st-$r/$TEMP_DIR/fresh"
  done
  stage_argvs "$FIRST/st-@i@"
  at() { local c; c=$(qargv "$@"); printf '%s' "${c//\\@i\\@/@i@}"; } # keep @i@ unquoted
  # Each round: plain rsync -a and a whole syncgate sync into never-used
  # dests, then the first-sync rsync pass and fix-perms of its copy into
  # one more, as transfer_fresh runs them.
  CMD[pf_rsync]="$(q "$RSYNC") -a $(q "$UP/") $(q "$FIRST")/rs2-@i@/ 2>>$(q "$RS_LOG")"
  PREP[pf_rsync]=sync
  CMD[pf_sync]="$SG --config $(q "$FIRST")/sg2-@i@.toml sync bench 2>>$(q "$SG_LOG")"
  PREP[pf_sync]=sync
  CMD[pf_fresh]="$(at "${FRESH[@]}") >/dev/null 2>>$(q "$RS_LOG")"
  PREP[pf_fresh]=sync
  CMD[pf_fixperms]="$SG --config $(q "$FIRST")/st-@i@.toml fix-perms bench </dev/null >/dev/null 2>>$(q "$SG_LOG")"
  from=$(log_lines)
  bench_loop "$RUNS" pf_rsync pf_sync pf_fresh pf_fixperms
  S2_PF=$(stage2_decisions "$from")
  verify_tree "$FIRST/sg2-$RUNS"
  sum_to pf_parts pf_fresh pf_fixperms
  derive pf_gate pf_sync pf_fresh pf_fixperms
  PROF+=("")
  PROF+=("| first sync into an empty dest | wall (median) | cpu | vs plain \`rsync -a\` | |")
  PROF+=("|---|---|---|---|---|")
  row "plain \`rsync -a\` (same rounds as below)" pf_rsync pf_rsync
  row "\`syncgate sync\` ($S2_PF)" pf_sync pf_rsync
  row "↳ the first-sync rsync pass alone (into DEST/$TEMP_DIR/fresh)" pf_fresh pf_rsync
  row "↳ fix-perms of that copy, right after (transfer runs the same walk before publishing)" pf_fixperms pf_rsync
  row "↳ gate + transfer overhead + publishing renames (sync − the two above)" pf_gate pf_rsync
  row "rsync pass + fix-perms, run alone" pf_parts pf_rsync
fi

# ---- table ----------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
cat <<EOF

## syncgate benchmark

- upstream: $N_UP_FILES files, $UP_BYTES bytes ($GEN_ID) in \`$UP\`; every dest on the same filesystem ($(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?'))
- $(uname -sr), $(nproc) CPUs, load average $LOAD_START at start, $LOAD_END at end; $("$RSYNC" --version | head -n1 | sed 's/  */ /g')
- timing: compared commands interleaved round by round, 1 warmup round, median of the rest (cpu = user+sys of the whole process tree); page cache warm; \`sync\` before every first-sync run, each into a never-used dir$(if ((HYPERFINE)); then echo "; no-op gate commands: $(hyperfine --version), 50 runs"; fi)
- plain rsync: \`rsync -a SRC/ DST/\` (-rlptgoD)
- syncgate: \`syncgate --config CFG sync bench\`, privilege = "direct". Into an empty dest, \`transfer\` makes one rsync pass into DEST/$TEMP_DIR/fresh (common flags \`-rlpt --safe-links --no-human-readable --stats --chmod=D$DIR_MODE,F$FILE_MODE --group --groupmap=*:$GROUP --timeout=$IO_TIMEOUT --exclude=/$TEMP_DIR/\` + \`--delete\`), runs the fix-perms walker on that copy and publishes it by renames, last files last; no separate fix-perms step. Into a dest that holds a mirror, \`transfer\` first runs the plan (common + \`--temp-dir=$TEMP_DIR --dry-run --itemize-changes --info=name1\`) while counting dest; when nothing is itemized and the counts match, that is the whole sync. Otherwise stage 1 (\`--delete --max-delete=0 --exclude=LAST...\`), the probe, stage 2 and fix-perms follow as before. Routes in the timed runs: first sync $S2_FIRST; no-change $S2_NOOP. Rebuilt argvs: $ARGV_CHECK
- fix-perms: the walker of src/owner/fixperms/ (numeric ids, *at calls); it repairs nothing in these runs, since rsync already set modes and group

| measurement | plain rsync | syncgate | ratio / value | target | result |
|---|---|---|---|---|---|
| first sync into an empty dest ($RUNS rounds) | $(cell first_rsync) | $(cell first_syncgate) | ${R_FIRST}× (cpu ${R_FIRST_CPU}×) | ≤ 1.05× | $V_FIRST |
| no-change resync ($NOOP_RUNS rounds) | $(cell noop_rsync) | $(cell noop_syncgate) | ${R_NOOP}× (cpu ${R_NOOP_CPU}×) | ≤ 1.20× | $V_NOOP |
| burst: sync runs for 1 in-flight + $BURST_N requests | | runs #$((B_BEFORE + 1))..#$B_AFTER: $B_SERVED; served total $B_SERVED_SUM | $B_RUNS runs | ≤ 2 | $V_RUNS |
| burst: exit codes ($((BURST_N + 1)) processes) | | $B_CODES | $B_BAD non-zero | all 0 | $V_CODES |
| burst: last caller's latency (launch → exit) | | in-flight run still ran $(fmt_s "$B_WAIT_INFLIGHT") after its launch, then $(fmt_s "$B_AFTER_INFLIGHT") | $(fmt_s "$B_LAST_LAT") (max of $BURST_N: $(fmt_s "$B_MAX_LAT")) | ≈ rest of in-flight run + one sync | info |
| burst: duration of one sync | | in-flight run (2 × $BIG_MIB MiB at $BURST_BWLIMIT KiB/s): $(fmt_s "$B_INIT_DUR"); no-change sync of this mirror: $(fmt_s "${WALL[burst_noop]}") | | | info |
| burst: all $BURST_N launched while the first run was in flight | | last launched $(fmt_s "$B_LAUNCH_SPAN") after it started; callers per run: $B_BY_RUN | $INFLIGHT | yes | info |
| \`syncgate status\` (median of 50) | | $(fmt_ms "${OP[status]}") | peak RSS $RSS_STATUS KiB | | info |
| \`syncgate status --json\` (median of 50) | | $(fmt_ms "${OP[status_json]}") | peak RSS $RSS_JSON KiB | | info |
| \`syncgate sync\` no-change: peak RSS of the process tree (rsync's included) | | | $RSS_SYNC KiB | | info |
EOF
if ((${#PROF[@]})); then
  printf '\n### Where the time goes (rsync argvs rebuilt from src/owner/rsync/argv.rs, run alone)\n\n'
  printf '%s\n' "${PROF[@]}"
fi
printf '\nLogs: %s (syncgate stderr: %s); raw timings: %s; burst records: %s\n' "$LOGS" "$SG_LOG" "$RES" "$BD"

# The first-sync dests are large and only ever used once.
say "removing $FIRST"
rm -rf "$FIRST"
sync
date +%s >"$W/first.deleted"

if ((B_BAD)); then
  say "FAILED: $B_BAD burst process(es) exited non-zero (see $BD/*.err)"
  exit 1
fi
