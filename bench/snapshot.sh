#!/usr/bin/env bash
# bench/snapshot.sh: a benchmark (not a test) of `syncgate sync` with
# publish = "snapshot" against what an admin would otherwise run: plain
# `rsync -a`, and Debian's ftpsync (two rsync calls), on a local tree of
# FILES small files plus IMAGES images of IMAGE_MIB MiB and their SHA256SUMS.
#
#   bench/snapshot.sh                              # ~15 min, table on stdout
#   BENCH_RUNS=7 SCALE="200000 500000" bench/snapshot.sh
#
# Environment:
#   BENCH_DIR        work dir (cached upstream trees, pristine dests, logs);
#                    default /tmp/syncgate-snapbench. Needs ~3 GB at the
#                    default sizes, plus ~1 GB per 100,000 files of SCALE.
#   BENCH_RUNS       timed rounds per scenario (>= 3, default 5), after one
#                    warmup round
#   BENCH_SCENARIOS  which of 1-4 to run at FILES (default "1 2 3 4"; 5 comes
#                    with 3 and 4)
#   FILES            small files in the tree (default 50000)
#   IMAGES           images (default 3); IMAGE_MIB their size (default 64)
#   SCALE            file counts for scenario 6 (scenarios 2-4 again, with
#                    peak RSS); default "200000"; "" skips it; add 500000
#                    for the big one (slow: tens of minutes)
#   SCALE_RUNS       timed rounds per scaled scenario (>= 3, default 3)
#   BENCH_PROFILE_RUNS  rounds of the breakdown of scenarios 3 and 4
#                    (default 3; 0 skips the breakdown)
#   BENCH_TWO_STAGE  1 (default) = also time syncgate with publish =
#                    "two-stage" in scenarios 3 and 4, for reference
#   BENCH_NO_WAIT    1 = do not wait out ext4's inode-reuse window (below)
#   BENCH_NO_INSTALL 1 = never try `apt-get install` (time)
#   CARGO_TARGET_DIR respected by the build
#
# Scenarios (bench/README.md has the why):
#   1 first sync into an empty dest            vs rsync -a             (<= 1.05x)
#   2 no-change resync                         vs rsync -a             (<= 1.05x)
#   3 one image replaced + its SHA256SUMS      vs ftpsync's two calls  (<= 1.15x)
#   4 1% of small files changed, 10 added, 10 deleted, vs ftpsync      (<= 1.25x)
#   5 du of dest's parent with 2 kept snapshots vs one plain tree
#   6 scenarios 2-4 at SCALE files, with peak RSS
#
# Every contender of a round starts from the same state: dests are hard-link
# copies (cp -al) of a pristine dest made once, the upstream of a scenario is
# a real copy of the base tree with the scenario's change applied. rsync
# never writes a file in place here (no --inplace), so the pristine inodes
# the copies share are never modified.
#
# Exit status: 0 when everything could be measured, whether or not the
# targets were met (misses are printed as MISS); non-zero only when something
# actually failed (build, a non-zero exit, a wrong tree).
set -euo pipefail
export LC_ALL=C

top=$(cd "$(dirname "$0")/.." && pwd)
W=${BENCH_DIR:-/tmp/syncgate-snapbench}
RUNS=${BENCH_RUNS:-5}
FILES=${FILES:-50000}
IMAGES=${IMAGES:-3}
IMAGE_MIB=${IMAGE_MIB:-64}
SCALE=${SCALE-200000}
SCALE_RUNS=${SCALE_RUNS:-3}
PROFILE_RUNS=${BENCH_PROFILE_RUNS:-3}
TWO_STAGE=${BENCH_TWO_STAGE:-1}
SCENARIOS=" ${BENCH_SCENARIOS:-1 2 3 4} "
((RUNS >= 3)) || RUNS=3
((SCALE_RUNS >= 3)) || SCALE_RUNS=3
((FILES >= 1000)) || FILES=1000
((IMAGES >= 1)) || IMAGES=1

# Shape of a generated tree: pool/tNN/pkgNNNNN/ leaf dirs of FAN files each,
# 20 leaves per top dir (a Debian-like pool), images/ with the images and
# their SHA256SUMS, release.json at the top.
FAN=100
LEAVES_PER_TOP=20
GEN_VERSION=v1

# ftpsync (Debian package ftpsync 20180513+nmu1, /usr/bin/ftpsync), the
# rsync options of every call (RSYNC_OPTIONS for rsync protocol >= 31, with
# the --quiet --log-file, trace-file filters, --bwlimit=0 and
# --exclude=.~tmp~/ it adds), stage 1 (RSYNC_OPTIONS1: the index files held
# back; SHA256SUMS is this tree's index) and stage 2 (RSYNC_OPTIONS2).
# shellcheck disable=SC2054 # the commas are rsync's
FTP_OPTS=(-prltvHSB8192 --safe-links --chmod=D755,F644 --timeout 120 --stats
  --no-human-readable --no-inc-recursive)
FTP_OPTS1=('--include=*.diff/' '--exclude=*.diff/Index' '--exclude=Packages*'
  '--exclude=Sources*' '--exclude=Release*' --exclude=InRelease
  --include=i18n/by-hash '--exclude=i18n/*' '--exclude=ls-lR*' '--exclude=SHA256SUMS')
FTP_OPTS2=(--max-delete=40000 --delay-updates --delete --delete-delay --delete-excluded)

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
q() { printf '%q' "$1"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# NOW = wall clock in microseconds (no fork with bash's EPOCHREALTIME).
stamp() { NOW=${EPOCHREALTIME/[.,]/}; }
# CPU_T = user+sys clock ticks of this shell's reaped children (whole trees).
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_now() {
  local line f
  read -r line <"/proc/$BASHPID/stat"
  read -ra f <<<"${line##*) }"
  CPU_T=$((f[13] + f[14]))
}
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.2f\n", a / b }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
fmt_s() { awk -v a="$1" 'BEGIN { printf "%.3f s\n", a }'; }
# quart: reads numbers, prints "median q1 q3 min max" (linear interpolation)
quart() {
  sort -g | awk '
    { v[NR] = $1 }
    function at(p,   h, lo) { h = (NR - 1) * p + 1; lo = int(h); return v[lo] + (h - lo) * (v[lo + 1 < NR ? lo + 1 : NR] - v[lo]) }
    END { if (NR == 0) { print "nan nan nan nan nan"; exit } printf "%.6f %.6f %.6f %.6f %.6f\n", at(0.5), at(0.25), at(0.75), v[1], v[NR] }'
}

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
[[ -x /usr/bin/time ]] || try_install time || say "/usr/bin/time not available: no peak RSS"
[[ -r /proc/$$/stat && -n ${EPOCHREALTIME:-} ]] || die "/proc and bash >= 5 are required"
LOAD_START=$(loadavg)

# ---- build ---------------------------------------------------------------------
say "building (cargo build --release)"
build_json=$(cd "$top" && cargo build --release --message-format=json-render-diagnostics) ||
  die "cargo build --release"
bin=$(printf '%s\n' "$build_json" | grep -o '"executable":"[^"]*/syncgate"' | tail -n1 | cut -d'"' -f4)
[[ -n $bin && -x $bin ]] || die "cannot find the syncgate binary in cargo's output"
say "binary: $bin"
SG=$(q "$bin")

# ---- work dir -------------------------------------------------------------------
mkdir -p "$W"
W=$(cd "$W" && pwd)
chmod 0755 "$W"
LOGS=$W/logs
RES=$W/results
RUN=$W/run # per-round dests (hard-link copies), removed after each scenario
rm -rf "$LOGS" "$RES" "$RUN"
mkdir -p "$LOGS" "$RES" "$RUN" "$W/bin"
SG_LOG=$LOGS/syncgate.stderr
RS_LOG=$LOGS/rsync.stderr
: >"$SG_LOG"
: >"$RS_LOG"
OWNER=$(id -un)
GROUP=$(id -gn)

# ext4 without a journal will not reuse an inode freed less than 60 s ago
# (300 s while its inode table block is dirty; fs/ext4/ialloc.c,
# recently_deleted()), and creating many files shortly after deleting many is
# then several times slower (bench/README.md). The first-sync dests of the
# previous run are removed at its end and stamped; wait that out.
if [[ $SCENARIOS == *" 1 "* && -f $W/first.deleted && ${BENCH_NO_WAIT:-0} != 1 &&
  $(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo ext4) == ext4 ]]; then
  left=$(($(cat "$W/first.deleted") + 300 - $(date +%s)))
  if ((left > 0)); then
    say "waiting ${left}s: inodes freed by the last run slow down ext4 inode allocation for 300 s (BENCH_NO_WAIT=1 skips)"
    sleep "$left"
  fi
fi

# The ftpsync baseline: its two calls, one after the other (stage 2 only if
# stage 1 succeeded, as ftpsync does). RSYNC_BIN picks the rsync (the
# breakdown points it at the timing wrapper).
FTP=$W/bin/ftpsync-two-calls
# shellcheck disable=SC2016 # the $ are the generated script's
{
  printf '#!/usr/bin/env bash\n# ftpsync-two-calls SRC/ DEST/ LOGFILE (generated by bench/snapshot.sh)\n'
  printf 'r=${RSYNC_BIN:-%s}\n' "$(q "$RSYNC")"
  printf 'common=(--quiet --log-file "$3"'
  for f in Archive-Update-in-Progress-bench Archive-Update-Required-bench project/trace/bench \
    project/trace/bench-stage1 project/trace/_hierarchy project/trace/_traces; do
    printf ' %s %s' "$(q "--filter=exclude_/$f")" "$(q "--filter=protect_/$f")"
  done
  printf ' --filter=include_/project/ --filter=protect_/project/ --filter=include_/project/trace/ --filter=protect_/project/trace/ %s' "$(q '--filter=include_/project/trace/*')"
  printf ' --bwlimit=0'
  for a in "${FTP_OPTS[@]}"; do printf ' %s' "$(q "$a")"; done
  printf ' %s)\n' "$(q '--exclude=.~tmp~/')"
  printf '"$r" "${common[@]}"'
  for a in "${FTP_OPTS1[@]}"; do printf ' %s' "$(q "$a")"; done
  printf ' "$1" "$2" || exit\n'
  printf 'exec "$r" "${common[@]}"'
  for a in "${FTP_OPTS2[@]}"; do printf ' %s' "$(q "$a")"; done
  printf ' "$1" "$2"\n'
} >"$FTP"
chmod 0755 "$FTP"

# The timing wrapper for the breakdown: logs "start end exit argv" (µs) of
# every rsync call and rsync's peak RSS. privilege = "direct" does not check
# that rsync is root-owned all the way up (src/owner/trust.rs: only sudo).
WRAP=$W/bin/rsync-timed
WRAP_LOG=$LOGS/rsync-calls.log
cat >"$WRAP" <<EOF
#!/usr/bin/env bash
# generated by bench/snapshot.sh: runs rsync, logs when and how
s=\${EPOCHREALTIME/./}
rc=0
if [[ -x /usr/bin/time ]]; then
  /usr/bin/time -f '%M' -o "$WRAP_LOG.rss.\$\$" $(q "$RSYNC") "\$@" || rc=\$?
  rss=\$(tail -n1 "$WRAP_LOG.rss.\$\$" 2>/dev/null); rm -f "$WRAP_LOG.rss.\$\$"
else
  $(q "$RSYNC") "\$@" || rc=\$?
  rss=n/a
fi
e=\${EPOCHREALTIME/./}
printf '%s\t%s\t%s\t%s\t%s\n' "\$s" "\$e" "\$rc" "\$rss" "\${*@Q}" >>$(q "$WRAP_LOG")
exit \$rc
EOF
chmod 0755 "$WRAP"
: >"$WRAP_LOG"

# write_config FILE STATE DEST PUBLISH [RSYNC]
write_config() {
  cat >"$1" <<TOML
# Generated by bench/snapshot.sh.
state_dir = "$2"
privilege = "direct"
rsync = "${5:-$RSYNC}"
heartbeat = 5

[syslog]
socket = "$W/no-syslog-here"

[mirror.bench]
upstream = "$UP0"
dest = "$3"
owner = "$OWNER"
reader_group = "$GROUP"
publish = "$4"
TOML
}
# The upstream of a config is set per scenario (sed, below).
config_for() { # config_for FILE STATE DEST PUBLISH UPSTREAM [RSYNC]
  write_config "$1" "$2" "$3" "$4" "${6:-}"
  sed -i "s|^upstream = .*|upstream = \"$5\"|" "$1"
}

# ---- timing ---------------------------------------------------------------------
# bench_loop TAG ROUNDS NAME...: for round 0..ROUNDS, runs PREP[NAME]
# (untimed), then CMD[NAME] (timed), for every NAME; the order rotates each
# round (A B C, B C A, ...) so that no contender always follows the same one.
# Round 0 is a warmup and is dropped. "@i@" is replaced by the round number.
# Results in $RES/TAG-NAME.tsv: wall µs, cpu ticks, round.
declare -A CMD PREP
bench_loop() {
  local tag=$1 rounds=$2 r k n name cmd prep t0 c0
  shift 2
  local names=("$@")
  n=${#names[@]}
  for name in "${names[@]}"; do : >"$RES/$tag-$name.tsv"; done
  for ((r = 0; r <= rounds; r++)); do
    for ((k = 0; k < n; k++)); do
      name=${names[(k + r) % n]}
      cmd=${CMD[$name]//@i@/$r}
      prep=${PREP[$name]:-}
      prep=${prep//@i@/$r}
      if [[ -n $prep ]]; then bash -c "$prep" || die "$tag/$name: prepare failed (round $r): $prep"; fi
      cpu_now
      c0=$CPU_T
      stamp
      t0=$NOW
      bash -c "$cmd" || die "$tag/$name: failed (round $r; see $LOGS): $cmd"
      stamp
      cpu_now
      ((r == 0)) || printf '%s\t%s\t%s\n' "$((NOW - t0))" "$((CPU_T - c0))" "$r" >>"$RES/$tag-$name.tsv"
    done
  done
  for name in "${names[@]}"; do say "  $tag/$name: $(cell "$tag" "$name")"; done
}
# st TAG NAME: "median q1 q3 min max" (s) of the wall times
st() { cut -f1 "$RES/$1-$2.tsv" | awk '{ print $1 / 1e6 }' | quart; }
cpu_med() { cut -f2 "$RES/$1-$2.tsv" | awk -v t="$CLK_TCK" '{ print $1 / t }' | quart | cut -d' ' -f1; }
cell() { # cell TAG NAME: "1.234 s (IQR 1.2–1.3; 1.1–1.5; cpu 0.9 s)"
  local m q1 q3 lo hi
  read -r m q1 q3 lo hi < <(st "$1" "$2")
  printf '%.3f s (IQR %.3f–%.3f, min–max %.3f–%.3f; cpu %.2f s)' "$m" "$q1" "$q3" "$lo" "$hi" "$(cpu_med "$1" "$2")"
}
med() { st "$1" "$2" | cut -d' ' -f1; }
# paired TAG A B: "median q1 q3 min max" of A/B taken round by round
paired() {
  join -j1 <(awk '{ print $3, $1 }' "$RES/$1-$2.tsv" | sort) <(awk '{ print $3, $1 }' "$RES/$1-$3.tsv" | sort) |
    awk '{ print $2 / $3 }' | quart
}
ratio_cell() { # ratio_cell TAG A B: "1.23× (paired 1.20×, 1.10–1.30)"
  local pm plo phi
  read -r pm _ _ plo phi < <(paired "$1" "$2" "$3")
  printf '%s× (per round: median %.2f×, min–max %.2f–%.2f×; cpu %s×)' \
    "$(fdiv "$(med "$1" "$2")" "$(med "$1" "$3")")" "$pm" "$plo" "$phi" \
    "$(fdiv "$(cpu_med "$1" "$2")" "$(cpu_med "$1" "$3")")"
}
verdict() { # verdict TAG A B TARGET
  if le "$(fdiv "$(med "$1" "$2")" "$(med "$1" "$3")")" "$4"; then echo PASS; else echo MISS; fi
}

# routes LOG_FROM_LINE: how the syncgate runs logged since then went
routes() {
  local from=$1 live unchanged fresh
  live=$(tail -n "+$((from + 1))" "$SG_LOG" | grep -c 'is live; kept:' || true)
  unchanged=$(tail -n "+$((from + 1))" "$SG_LOG" | grep -c '^syncgate: unchanged' || true)
  fresh=$(tail -n "+$((from + 1))" "$SG_LOG" | grep -c 'building the new release in [^,]*$' || true)
  printf '%s snapshots made live (%s of them without a live snapshot to link from), %s unchanged' "$live" "$fresh" "$unchanged"
}
log_lines() { wc -l <"$SG_LOG"; }

# same_tree UP DEST: DEST holds exactly UP's files with UP's contents
same_tree() {
  local diff
  diff=$("$RSYNC" -rcn --delete --out-format='%i %n' '--exclude=/.syncgate-tmp' "$1/" "$2/" 2>&1 |
    grep -v '^\.d' || true)
  [[ -z $diff ]] || die "$2 differs from $1: $(head -n5 <<<"$diff")"
}

# ---- trees ----------------------------------------------------------------------
# gen_base DIR NFILES: the base upstream (bash builtins only: no fork per file)
gen_base() {
  local dir=$1 n=$2 blob i leaf topd size off path
  rm -rf "$dir"
  mkdir -p "$dir/pool" "$dir/images"
  blob=$(head -c 6144 /dev/urandom | base64 -w0)
  for ((i = 0; i < n; i++)); do
    leaf=$((i / FAN))
    if ((i % FAN == 0)); then
      topd=$((leaf / LEAVES_PER_TOP))
      path=$(printf '%s/pool/t%02d/pkg%05d' "$dir" "$topd" "$leaf")
      mkdir -p "$path"
    fi
    size=$((1024 + (i * 2654435761) % 3073))
    off=$((i % 4096))
    printf '%08d\n%s' "$i" "${blob:off:size-9}" >"$path/pkg${leaf}_$((i % FAN)).dat"
  done
  for ((i = 1; i <= IMAGES; i++)); do
    head -c "$((IMAGE_MIB * 1024 * 1024))" /dev/urandom >"$dir/images/img-$i.iso"
  done
  (cd "$dir/images" && sha256sum ./*.iso >SHA256SUMS)
  printf '{"release": "bench", "files": %d}\n' "$n" >"$dir/release.json"
  # Everything a little in the past, so that the changes below are newer.
  find "$dir" -exec touch -h -d '2 days ago' {} +
}
small_path() { # small_path ROOT I: the path of small file I
  local leaf=$(($2 / FAN))
  printf '%s/pool/t%02d/pkg%05d/pkg%d_%d.dat' "$1" "$((leaf / LEAVES_PER_TOP))" "$leaf" "$leaf" "$(($2 % FAN))"
}
# mutate3 DIR: image 1 replaced (new contents, same name and size), SHA256SUMS anew
mutate3() {
  head -c "$((IMAGE_MIB * 1024 * 1024))" /dev/urandom >"$1/images/img-1.iso.new"
  mv "$1/images/img-1.iso.new" "$1/images/img-1.iso"
  (cd "$1/images" && sha256sum ./*.iso >SHA256SUMS)
}
# mutate4 DIR N: 1% of the small files rewritten, 10 added, 10 deleted
mutate4() {
  local dir=$1 n=$2 i k p size
  for ((i = 37; i < n; i += 100)); do
    p=$(small_path "$dir" "$i")
    size=$(stat -c %s "$p")
    { printf 'changed %08d\n' "$i"; head -c "$((size - 17))" "$p"; } >"$p.new"
    mv "$p.new" "$p"
  done
  for ((k = 0; k < 10; k++)); do
    i=$(((k * n / 10 + 51) % n))
    p=$(small_path "$dir" "$i")
    printf 'added %d\n' "$k" >"${p%.dat}_added.dat"
    i=$(((k * n / 10 + 73) % n))
    rm -f "$(small_path "$dir" "$i")"
  done
}

# prepare_size N: the upstreams (cached across runs) and pristine dests of
# tree size N; sets UP0 (base), UP3, UP4 (scenario 3's and 4's upstream) and
# P (pristines: rs = rsync -a, ftp = ftpsync, sg/mirror = syncgate snapshot,
# ts = syncgate two-stage).
prepare_size() {
  local n=$1 id d
  d=$W/size-$n
  id="$GEN_VERSION files=$n fan=$FAN/$LEAVES_PER_TOP images=${IMAGES}x${IMAGE_MIB}MiB"
  UP0=$d/up-base
  UP3=$d/up-s3
  UP4=$d/up-s4
  P=$d/pristine
  if [[ ! -f $d/done || $(cat "$d/done") != "$id" ]]; then
    say "generating the trees of $n files + $IMAGES x $IMAGE_MIB MiB in $d (cached for later runs)"
    rm -rf "$d"
    mkdir -p "$d"
    gen_base "$UP0" "$n"
    cp -a "$UP0" "$UP3"
    mutate3 "$UP3"
    cp -a "$UP0" "$UP4"
    mutate4 "$UP4" "$n"
    mkdir -p "$P/sg" "$P/ts"
    "$RSYNC" -a "$UP0/" "$P/rs/" 2>>"$RS_LOG" || die "rsync -a into $P/rs"
    "$FTP" "$UP0/" "$P/ftp/" "$LOGS/ftpsync.log" 2>>"$RS_LOG" || die "ftpsync into $P/ftp"
    config_for "$d/p-sg.toml" "$d/p-state-sg" "$P/sg/mirror" snapshot "$UP0"
    "$bin" --config "$d/p-sg.toml" sync bench >/dev/null 2>>"$SG_LOG" || die "syncgate sync into $P/sg"
    config_for "$d/p-ts.toml" "$d/p-state-ts" "$P/ts/mirror" two-stage "$UP0"
    "$bin" --config "$d/p-ts.toml" sync bench >/dev/null 2>>"$SG_LOG" || die "syncgate sync into $P/ts"
    [[ -L $P/sg/mirror ]] || die "$P/sg/mirror is not a snapshot symlink"
    for t in rs ftp sg/mirror ts/mirror; do same_tree "$UP0" "$P/$t"; done
    sync
    printf '%s\n' "$id" >"$d/done"
  else
    say "reusing the cached trees of $d ($id)"
  fi
  say "warming the page cache with the upstream trees"
  find "$UP0" "$UP3" "$UP4" -type f -print0 | xargs -0 cat >/dev/null
  N_UP_FILES=$(find "$UP0" -type f | wc -l)
}

# A round's copy of a pristine dest (never timed). For syncgate, the whole
# parent (dest symlink + snapshot root), without the private dir of the
# pristine's last run.
copy_cmd() { # copy_cmd PRISTINE COPY
  printf 'rm -rf %s && cp -al %s %s && rm -rf %s/.syncgate-tmp %s/.mirror.snapshots/.syncgate-tmp %s/mirror/.syncgate-tmp && sync' \
    "$(q "$2")" "$(q "$1")" "$(q "$2")" "$(q "$2")" "$(q "$2")" "$(q "$2")"
}
sg_cmd() { printf '%s --config %s sync bench >/dev/null 2>>%s' "$SG" "$(q "$1")" "$(q "$SG_LOG")"; }
ftp_cmd() { # ftp_cmd UP DEST
  printf '%s %s/ %s/ %s 2>>%s' "$(q "$FTP")" "$(q "$1")" "$(q "$2")" "$(q "$LOGS/ftpsync.log")" "$(q "$RS_LOG")"
}

ROWS=()
DU_ROWS=()
PROF_ROWS=()
RSS_ROWS=()
NOTES=()
row() { ROWS+=("$1"); }

# ---- scenarios ------------------------------------------------------------------
# Each sets CMD/PREP for its contenders and runs bench_loop; TAG includes the size.

scenario1() { # first sync into an empty dest
  local n=$1 rounds=$2 tag=s1-$1 f=$W/first from r
  mkdir -p "$f"
  for ((r = 0; r <= rounds; r++)); do
    mkdir -p "$f/sg-$n-$r"
    config_for "$f/sg-$n-$r.toml" "$f/state-$n-$r" "$f/sg-$n-$r/mirror" snapshot "$UP0"
  done
  CMD[rsync]="$(q "$RSYNC") -a $(q "$UP0/") $(q "$f")/rs-$n-@i@/ 2>>$(q "$RS_LOG")"
  PREP[rsync]=sync
  CMD[sg]=$(sg_cmd "$f/sg-$n-@i@.toml")
  PREP[sg]=sync
  say "scenario 1 ($n files): first sync into an empty dest, $rounds rounds (+1 warmup)"
  local load
  load=$(loadavg)
  from=$(log_lines)
  bench_loop "$tag" "$rounds" rsync sg
  same_tree "$UP0" "$f/rs-$n-$rounds"
  same_tree "$UP0" "$f/sg-$n-$rounds/mirror"
  row "| 1. first sync into an empty dest ($n files) | \`rsync -a\`: $(cell "$tag" rsync) | $(cell "$tag" sg) | $(ratio_cell "$tag" sg rsync) | ≤ 1.05× | $(verdict "$tag" sg rsync 1.05) | $load |"
  NOTES+=("scenario 1 ($n files), syncgate routes: $(routes "$from")")
}

scenario2() { # no-change resync
  local n=$1 rounds=$2 tag=s2-$1 from
  say "scenario 2 ($n files): no-change resync, $rounds rounds (+1 warmup)"
  bash -c "$(copy_cmd "$P/rs" "$RUN/s2-rs")"
  bash -c "$(copy_cmd "$P/sg" "$RUN/s2-sg")"
  config_for "$RUN/s2-sg.toml" "$RUN/s2-state" "$RUN/s2-sg/mirror" snapshot "$UP0"
  CMD[rsync]="$(q "$RSYNC") -a $(q "$UP0/") $(q "$RUN/s2-rs/") 2>>$(q "$RS_LOG")"
  PREP[rsync]=
  CMD[sg]=$(sg_cmd "$RUN/s2-sg.toml")
  PREP[sg]=
  local load
  load=$(loadavg)
  from=$(log_lines)
  bench_loop "$tag" "$rounds" rsync sg
  same_tree "$UP0" "$RUN/s2-sg/mirror"
  row "| 2. no-change resync ($n files) | \`rsync -a\`: $(cell "$tag" rsync) | $(cell "$tag" sg) | $(ratio_cell "$tag" sg rsync) | ≤ 1.05× | $(verdict "$tag" sg rsync 1.05) | $load |"
  NOTES+=("scenario 2 ($n files), syncgate routes: $(routes "$from")")
  if [[ -x /usr/bin/time ]]; then
    rss_of "2. no-change ($n files)" "$RUN/s2-sg.toml" ""
  fi
  rm -rf "$RUN/s2-rs" "$RUN/s2-sg"
}

# changed NUM N ROUNDS UP TARGET TITLE: scenarios 3 and 4 (dests start as
# the pristine copies of the base tree, the upstream is UP)
changed() {
  local num=$1 n=$2 rounds=$3 up=$4 target=$5 title=$6 tag=s$1-$2 from r names
  say "scenario $num ($n files): $title, $rounds rounds (+1 warmup)"
  for ((r = 0; r <= rounds; r++)); do
    config_for "$RUN/s$num-sg-$r.toml" "$RUN/s$num-state-sg-$r" "$RUN/s$num-sg-$r/mirror" snapshot "$up"
    config_for "$RUN/s$num-ts-$r.toml" "$RUN/s$num-state-ts-$r" "$RUN/s$num-ts-$r/mirror" two-stage "$up"
  done
  CMD[ftp]=$(ftp_cmd "$up" "$RUN/s$num-ftp-@i@")
  PREP[ftp]=$(copy_cmd "$P/ftp" "$RUN/s$num-ftp-@i@")
  CMD[sg]=$(sg_cmd "$RUN/s$num-sg-@i@.toml")
  PREP[sg]=$(copy_cmd "$P/sg" "$RUN/s$num-sg-@i@")
  CMD[ts]=$(sg_cmd "$RUN/s$num-ts-@i@.toml")
  PREP[ts]=$(copy_cmd "$P/ts" "$RUN/s$num-ts-@i@")
  names=(ftp sg)
  ((TWO_STAGE)) && names+=(ts)
  local load
  load=$(loadavg)
  from=$(log_lines)
  bench_loop "$tag" "$rounds" "${names[@]}"
  same_tree "$up" "$RUN/s$num-sg-$rounds/mirror"
  same_tree "$up" "$RUN/s$num-ftp-$rounds"
  ((TWO_STAGE)) && same_tree "$up" "$RUN/s$num-ts-$rounds/mirror"
  row "| $num. $title ($n files) | ftpsync, 2 calls: $(cell "$tag" ftp) | $(cell "$tag" sg) | $(ratio_cell "$tag" sg ftp) | ≤ ${target}× | $(verdict "$tag" sg ftp "$target") | $load |"
  if ((TWO_STAGE)); then
    row "| ↳ reference: syncgate \`publish = \"two-stage\"\` ($n files) | ftpsync (same rounds) | $(cell "$tag" ts) | $(ratio_cell "$tag" ts ftp) | | info | |"
  fi
  NOTES+=("scenario $num ($n files), routes of the snapshot runs: $(routes "$from")")
  LAST_SG=$RUN/s$num-sg-$rounds
  LAST_FTP=$RUN/s$num-ftp-$rounds
}

# du_rows NUM N CHANGED_BYTES: scenario 5 after scenario NUM (the last round's dests)
du_rows() {
  local num=$1 n=$2 changed=$3 sgp ids snaps plain extra
  sgp=$(du -sb "$LAST_SG" | cut -f1)
  plain=$(du -sb "$LAST_FTP" | cut -f1)
  ids=$(cd "$LAST_SG/.mirror.snapshots" && find . -mindepth 1 -maxdepth 1 -type d -name '2*' | wc -l)
  snaps=$(cd "$LAST_SG/.mirror.snapshots" && for s in 2*; do printf '%s: %s, ' "$s" "$(du -sh "$s" | cut -f1)"; done)
  extra=$((sgp - plain))
  local inodes_sg inodes_plain
  inodes_sg=$(find "$LAST_SG/" -printf '%i\n' | sort -u | wc -l)
  inodes_plain=$(find "$LAST_FTP/" -printf '%i\n' | sort -u | wc -l)
  DU_ROWS+=("| after scenario $num ($n files) | $(du -sh "$LAST_FTP" | cut -f1) ($plain B; $inodes_plain inodes) | $(du -sh "$LAST_SG" | cut -f1) ($sgp B; $inodes_sg inodes; $ids snapshots: ${snaps%, }) | +$(numfmt --to=iec-i --suffix=B "$extra") (+$((inodes_sg - inodes_plain)) inodes) | $(numfmt --to=iec-i --suffix=B "$changed") ($changed B) |")
}

# rss_of TITLE CONFIG PREP: peak RSS of one sync: the largest process of the
# tree (/usr/bin/time -v), and syncgate's own processes (VmHWM sampled
# every 20 ms from /proc, a lower bound).
rss_of() {
  local title=$1 cfg=$2 prep=$3 tree pid own procs
  if [[ -n $prep ]]; then bash -c "$prep"; fi
  own=$LOGS/vmhwm.$$
  : >"$own"
  /usr/bin/time -v -o "$LOGS/time-v.txt" "$bin" --config "$cfg" sync bench >/dev/null 2>>"$SG_LOG" &
  pid=$!
  (
    while kill -0 "$pid" 2>/dev/null; do
      kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
      for c in $kids; do kids+=" $(cat /proc/"$c"/task/*/children 2>/dev/null || true)"; done
      for p in $kids; do
        [[ $(readlink /proc/"$p"/exe 2>/dev/null) == "$bin" ]] || continue
        awk -v p="$p" '/^VmHWM:/ { print p, $2 }' /proc/"$p"/status 2>/dev/null
      done
      sleep 0.02
    done
  ) >>"$own" &
  local sampler=$!
  wait "$pid" || die "$title: syncgate failed under /usr/bin/time"
  wait "$sampler" || true
  tree=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$LOGS/time-v.txt")
  # per process, in pid order: the gate (sync), then `transfer`
  procs=$(awk '{ if ($2 > m[$1]) m[$1] = $2 } END { for (p in m) print p, m[p] }' "$own" | sort -n |
    awk '{ printf "%s%s KiB", sep, $2; sep = ", " }')
  RSS_ROWS+=("| $title | $tree KiB | ${procs:-n/a} |")
  rm -f "$own"
}

# ---- breakdown ------------------------------------------------------------------
# profile NUM N UP: PROFILE_RUNS rounds of the snapshot sync, the two-stage
# sync and the ftpsync calls with rsync = the timing wrapper, syncgate's
# stderr lines time-stamped as they come.
profile() {
  local num=$1 n=$2 up=$3 r t0 t1 d cmd
  ((PROFILE_RUNS > 0)) || return 0
  say "breakdown of scenario $num ($n files): $PROFILE_RUNS rounds"
  d=$RES/prof-s$num-$n
  mkdir -p "$d"
  for ((r = 1; r <= PROFILE_RUNS; r++)); do
    for who in sg ts ftp; do
      ((TWO_STAGE)) || [[ $who != ts ]] || continue
      local dst=$RUN/p$num-$who-$r
      case $who in
        sg) bash -c "$(copy_cmd "$P/sg" "$dst")" ;;
        ts) bash -c "$(copy_cmd "$P/ts" "$dst")" ;;
        ftp) bash -c "$(copy_cmd "$P/ftp" "$dst")" ;;
      esac
      : >"$WRAP_LOG"
      if [[ $who == ftp ]]; then
        stamp
        t0=$NOW
        RSYNC_BIN=$WRAP "$FTP" "$up/" "$dst/" "$LOGS/ftpsync.log" 2>>"$RS_LOG" || die "ftpsync (profile)"
        stamp
        t1=$NOW
        : >"$d/$who-$r.err"
      else
        config_for "$RUN/p$num-$who-$r.toml" "$RUN/p$num-state-$who-$r" "$dst/mirror" \
          "$([[ $who == sg ]] && echo snapshot || echo two-stage)" "$up" "$WRAP"
        stamp
        t0=$NOW
        { "$bin" --config "$RUN/p$num-$who-$r.toml" sync bench 2>&1 >/dev/null || echo "exit $?"; } |
          while IFS= read -r l; do printf '%s\t%s\n' "${EPOCHREALTIME/./}" "$l"; done >"$d/$who-$r.err"
        stamp
        t1=$NOW
        ! grep -q $'\texit [0-9]' "$d/$who-$r.err" || die "syncgate failed (profile), see $d/$who-$r.err"
      fi
      printf '%s\t%s\n' "$t0" "$t1" >"$d/$who-$r.t"
      cp "$WRAP_LOG" "$d/$who-$r.calls"
      if [[ $who == sg && $num == 3 ]]; then
        # What verify = "changed" would hash: the image this run brought.
        stamp
        t0=$NOW
        sha256sum "$dst/mirror/images/img-1.iso" >/dev/null
        stamp
        printf '%s\n' "$((NOW - t0))" >"$d/sha-$r.t"
      fi
      if [[ $who == sg ]]; then
        # For reference: the cost of a bare hard-link farm of the live tree.
        local live
        live=$(readlink -f "$dst/mirror")
        stamp
        t0=$NOW
        cp -al "$live" "$dst/.mirror.snapshots/cp-al-reference"
        stamp
        printf '%s\n' "$((NOW - t0))" >"$d/cpal-$r.t"
        # The build's own argv run again alone, into a dir at the same depth
        # (.mirror.snapshots/.bench-tmp/X/): once as it is (--link-dest
        # absolute), once with --link-dest=../../ID (relative to the build
        # dir: fewer path components for rsync 3.4+'s per-component walk),
        # in turns.
        local bargv id x
        bargv=$(awk -F'\t' '$5 !~ /--dry-run/ { print $5 }' "$WRAP_LOG" | tail -n1)
        # Only for a build made with --link-dest (before the link farm).
        [[ $bargv == *--link-dest* ]] || continue
        id=${live##*/}
        mkdir -p "$dst/.mirror.snapshots/.bench-tmp"
        bargv=${bargv//"/.syncgate-tmp/build/'"/"/.bench-tmp/@X@/'"}
        for x in abs rel; do
          [[ $x == rel && $((r % 2)) == 1 ]] && continue
          [[ $x == abs ]] && cmd=${bargv//@X@/abs}
          [[ $x == rel ]] && cmd=${bargv//@X@/rel} && cmd=${cmd//"'--link-dest=$live'"/"'--link-dest=../../$id'"}
          stamp
          t0=$NOW
          eval "$(q "$RSYNC") $cmd" >/dev/null 2>>"$RS_LOG" || die "build argv rerun ($x)"
          stamp
          printf '%s\n' "$((NOW - t0))" >"$d/build-$x-$r.t"
          if [[ $x == abs && $((r % 2)) == 1 ]]; then
            cmd=${bargv//@X@/rel}
            cmd=${cmd//"'--link-dest=$live'"/"'--link-dest=../../$id'"}
            stamp
            t0=$NOW
            eval "$(q "$RSYNC") $cmd" >/dev/null 2>>"$RS_LOG" || die "build argv rerun (rel)"
            stamp
            printf '%s\n' "$((NOW - t0))" >"$d/build-rel-$r.t"
          fi
        done
        [[ $(find "$dst/.mirror.snapshots/.bench-tmp/rel" -type f -links 1 | wc -l) == $(find "$dst/.mirror.snapshots/.bench-tmp/abs" -type f -links 1 | wc -l) ]] ||
          die "the relative --link-dest linked a different number of files"
      fi
    done
    rm -rf "$RUN"/p"$num"-*-"$r"
  done
  # Segments of the snapshot runs (µs): see bench/README.md.
  local seg
  seg=$(for ((r = 1; r <= PROFILE_RUNS; r++)); do
    awk -F'\t' -v r="$r" -v tf="$d/sg-$r.t" -v cf="$d/sg-$r.calls" '
      BEGIN {
        getline l < tf; split(l, t, "\t"); T0 = t[1]; T1 = t[2]
        while ((getline l < cf) > 0) {
          split(l, c, "\t")
          if (c[5] ~ /--dry-run/) { ps = c[1]; pe = c[2] } else { bs = c[1]; be = c[2] }
        }
      }
      /syncgate: permissions:/ { perm = $1 }
      /is live; kept:/ { live = $1 }
      END {
        printf "start_to_plan %d\nplan %d\nplan_to_build %d\nbuild %d\nfixperms %d\nswitch_prune %d\ntail %d\ntotal %d\n",
          ps - T0, pe - ps, bs - pe, be - bs, perm - be, live - perm, T1 - live, T1 - T0
      }' "$d/sg-$r.err"
  done)
  local total
  total=$(awk '$1 == "total" { print $2 }' <<<"$seg" | quart | cut -d' ' -f1)
  segrow() { # segrow KEY LABEL
    local m lo hi
    read -r m _ _ lo hi < <(awk -v k="$1" '$1 == k { print $2 }' <<<"$seg" | quart)
    PROF_ROWS+=("| $num ($n files) | $2 | $(awk -v a="$m" 'BEGIN { printf "%.3f s", a / 1e6 }') | $(awk -v a="$lo" -v b="$hi" 'BEGIN { printf "%.3f–%.3f", a / 1e6, b / 1e6 }') | $(awk -v a="$m" -v b="$total" 'BEGIN { printf "%.0f%%", 100 * a / b }') |")
  }
  segrow total "\`syncgate sync\`, publish = \"snapshot\" (wrapper included)"
  segrow start_to_plan "↳ start → plan rsync starts (gate, spawn of \`transfer\`, layout)"
  segrow plan "↳ the plan: dry run against the live snapshot (+ count in a thread)"
  segrow plan_to_build "↳ plan end → build rsync starts (the link farm of the live snapshot)"
  segrow build "↳ the build: rsync into the farm in .syncgate-tmp/build"
  segrow fixperms "↳ fix-perms over the whole new tree (build end → \`permissions:\` line)"
  segrow switch_prune "↳ verification + renames + prune (→ \`is live\` line)"
  segrow tail "↳ after the \`is live\` line (state, exit)"
  onerow() { # onerow LABEL FILES... (µs per line)
    local label=$1 m lo hi
    shift
    read -r m _ _ lo hi < <(cat "$@" | quart)
    PROF_ROWS+=("| $num ($n files) | $label | $(awk -v a="$m" 'BEGIN { printf "%.3f s", a / 1e6 }') | $(awk -v a="$lo" -v b="$hi" 'BEGIN { printf "%.3f–%.3f", a / 1e6, b / 1e6 }') | $(awk -v a="$m" -v b="$total" 'BEGIN { printf "%.0f%%", 100 * a / b }') |")
  }
  local tmp=$d/tmp
  mkdir -p "$tmp"
  for ((r = 1; r <= PROFILE_RUNS; r++)); do
    awk -F'\t' '{ print $2 - $1 }' "$d/sg-$r.t" >"$tmp/sg-total-$r"
    awk -F'\t' '{ print $2 - $1 }' "$d/ftp-$r.t" >"$tmp/ftp-total-$r"
    awk -F'\t' 'NR == 1 { print $2 - $1 }' "$d/ftp-$r.calls" >"$tmp/ftp1-$r"
    awk -F'\t' 'NR == 2 { print $2 - $1 }' "$d/ftp-$r.calls" >"$tmp/ftp2-$r"
    if ((TWO_STAGE)); then
      awk -F'\t' '{ print $2 - $1 }' "$d/ts-$r.t" >"$tmp/ts-total-$r"
      awk -F'\t' '{ s += $2 - $1 } END { print s }' "$d/ts-$r.calls" >"$tmp/ts-rsync-$r"
    fi
  done
  [[ $num == 3 ]] && onerow "estimate, not in the run yet: verify = \"changed\", \`sha256sum\` of the new image" "$d"/sha-*.t
  onerow "reference: \`cp -al\` of the live tree (a bare hard-link farm)" "$d"/cpal-*.t
  onerow "the build's argv rerun alone (absolute --link-dest=$RUN/pN-sg-R/.mirror.snapshots/ID)" "$d"/build-abs-*.t
  onerow "the same with --link-dest=../../ID (relative to the build dir)" "$d"/build-rel-*.t
  onerow "ftpsync: both calls (same rounds)" "$tmp"/ftp-total-*
  onerow "↳ ftpsync stage 1 (no --delete, SHA256SUMS held back)" "$tmp"/ftp1-*
  onerow "↳ ftpsync stage 2 (--delete --delete-delay --delay-updates)" "$tmp"/ftp2-*
  if ((TWO_STAGE)); then
    onerow "syncgate two-stage (same rounds)" "$tmp"/ts-total-*
    onerow "↳ its rsync calls (plan, stage 1, probe when run, stage 2)" "$tmp"/ts-rsync-*
  fi
  # rsync peaks and the snapshot run's argvs, for the record
  NOTES+=("scenario $num ($n files), breakdown: rsync calls of the last snapshot run (peak RSS KiB, argv): $(awk -F'\t' '{ printf "%s[%s KiB] %s", sep, $4, $5; sep = " ;; " }' "$d/sg-$PROFILE_RUNS.calls")")
}

# profile2 N ROUNDS: the no-change sync cut up, interleaved: the exact plan
# argv (from the wrapper's log of one run) with and without --delete, a
# names-only walk of the live snapshot (what the count thread does), plain
# rsync -a, and the whole sync.
profile2() {
  local n=$1 rounds=$2 tag=p2-$1 plan live ref
  ((PROFILE_RUNS > 0)) || return 0
  say "breakdown of scenario 2 ($n files): $rounds rounds"
  bash -c "$(copy_cmd "$P/rs" "$RUN/p2-rs")"
  bash -c "$(copy_cmd "$P/sg" "$RUN/p2-sg")"
  config_for "$RUN/p2-sg.toml" "$RUN/p2-state" "$RUN/p2-sg/mirror" snapshot "$UP0"
  config_for "$RUN/p2-w.toml" "$RUN/p2-state" "$RUN/p2-sg/mirror" snapshot "$UP0" "$WRAP"
  : >"$WRAP_LOG"
  "$bin" --config "$RUN/p2-w.toml" sync bench >/dev/null 2>>"$SG_LOG" || die "syncgate sync (breakdown of scenario 2)"
  # The plan is the dry run that names what it skips (--info=name1); the
  # busy probe before it does not.
  plan=$(awk -F'\t' '$5 ~ /--info=name1/ { print $5; exit }' "$WRAP_LOG")
  [[ $plan == *--dry-run* ]] || die "no plan in $WRAP_LOG"
  live=$(readlink -f "$RUN/p2-sg/mirror")
  CMD[sync]=$(sg_cmd "$RUN/p2-sg.toml")
  CMD[plan]="$(q "$RSYNC") $plan >/dev/null 2>>$(q "$RS_LOG")"
  local withdel="'--dry-run' '--delete'"
  CMD[nodel]="$(q "$RSYNC") ${plan//"'--dry-run'"/$withdel} >/dev/null 2>>$(q "$RS_LOG")"
  CMD[count]="find $(q "$live") >/dev/null"
  CMD[rsync]="$(q "$RSYNC") -a $(q "$UP0/") $(q "$RUN/p2-rs/") 2>>$(q "$RS_LOG")"
  for ref in sync plan nodel count rsync; do PREP[$ref]=; done
  bench_loop "$tag" "$rounds" sync plan nodel count rsync
  ref=$(med "$tag" sync)
  p2row() { # p2row NAME LABEL
    local m lo hi
    read -r m _ _ lo hi < <(st "$tag" "$1")
    PROF_ROWS+=("| 2 ($n files) | $2 | $(fmt_s "$m") (cpu $(printf "%.2f" "$(cpu_med "$tag" "$1")") s) | $(printf '%.3f–%.3f' "$lo" "$hi") | $(awk -v a="$m" -v b="$ref" 'BEGIN { printf "%.0f%%", 100 * a / b }') |")
  }
  p2row sync "\`syncgate sync\`, no change (same rounds as below)"
  p2row plan "↳ the plan alone, its exact argv (dry run)"
  p2row nodel "↳ the same plan with \`--delete\` (the plan before the counts gave the deletions)"
  p2row count "↳ \`find LIVE\`: a names-only walk of the live snapshot (the count, in a thread)"
  p2row rsync "plain \`rsync -a\` no-change (same rounds)"
  rm -rf "$RUN/p2-rs" "$RUN/p2-sg"
}

# ---- main -----------------------------------------------------------------------
S3_TITLE="one image replaced + its SHA256SUMS"
S4_TITLE="1% of small files changed, 10 added, 10 deleted"

run_size() { # run_size N ROUNDS MAIN(1|0)
  local n=$1 rounds=$2 main=$3 changed_bytes
  prepare_size "$n"
  if ((main)) && [[ $SCENARIOS == *" 1 "* ]]; then scenario1 "$n" "$rounds"; fi
  if ((!main)) || [[ $SCENARIOS == *" 2 "* ]]; then
    scenario2 "$n" "$rounds"
    if ((main)); then profile2 "$n" "$rounds"; fi
  fi
  if ((main)) && [[ $SCENARIOS != *" 3 "* ]]; then :; else s3 "$n" "$rounds" "$main"; fi
  if ((main)) && [[ $SCENARIOS != *" 4 "* ]]; then :; else s4 "$n" "$rounds" "$main"; fi
  return 0
}
s3() {
  local n=$1 rounds=$2 main=$3 changed_bytes
  changed 3 "$n" "$rounds" "$UP3" 1.15 "$S3_TITLE"
  changed_bytes=$(($(stat -c %s "$UP3/images/img-1.iso") + $(stat -c %s "$UP3/images/SHA256SUMS")))
  du_rows 3 "$n" "$changed_bytes"
  if [[ -x /usr/bin/time ]]; then
    config_for "$RUN/rss3.toml" "$RUN/rss3-state" "$RUN/rss3/mirror" snapshot "$UP3"
    rss_of "3. one image replaced ($n files)" "$RUN/rss3.toml" "$(copy_cmd "$P/sg" "$RUN/rss3")"
  fi
  rm -rf "$RUN"/s3-*
  if ((main)); then profile 3 "$n" "$UP3"; fi
}
s4() {
  local n=$1 rounds=$2 main=$3 changed_bytes
  changed 4 "$n" "$rounds" "$UP4" 1.25 "$S4_TITLE"
  changed_bytes=$("$RSYNC" -rcn --out-format='%l %n' "$UP4/" "$UP0/" | awk '$2 !~ /\/$/ { s += $1 } END { print s + 0 }')
  du_rows 4 "$n" "$changed_bytes"
  if [[ -x /usr/bin/time ]]; then
    config_for "$RUN/rss4.toml" "$RUN/rss4-state" "$RUN/rss4/mirror" snapshot "$UP4"
    rss_of "4. 1% changed ($n files)" "$RUN/rss4.toml" "$(copy_cmd "$P/sg" "$RUN/rss4")"
  fi
  rm -rf "$RUN"/s4-* "$RUN"/rss*
  if ((main)); then profile 4 "$n" "$UP4"; fi
}

run_size "$FILES" "$RUNS" 1
for n in $SCALE; do
  [[ $n == "$FILES" ]] && continue
  run_size "$n" "$SCALE_RUNS" 0
done

# The first-sync dests go last, stamped for the next run (see above).
say "removing the first-sync dests"
rm -rf "$W/first" "$RUN"
sync
date +%s >"$W/first.deleted"
LOAD_END=$(loadavg)

# ---- report ---------------------------------------------------------------------
report() {
cat <<EOF
## bench/snapshot.sh — $(date -u +%Y-%m-%dT%H:%MZ)

Machine: $(uname -sr), $(nproc) CPUs, $(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?') at $W, $("$RSYNC" --version | head -n1 | awk '{ print $1, $3 }').
Load average (1/5/15 min): $LOAD_START at the start, $LOAD_END at the end.
Tree: $FILES small files (1–4 KiB, $FAN per leaf dir, $LEAVES_PER_TOP leaves per top dir) + $IMAGES × $IMAGE_MIB MiB images + SHA256SUMS; $N_UP_FILES files at the last size.
Rounds: $RUNS per scenario (+1 warmup, dropped; order rotated each round)${SCALE:+, $SCALE_RUNS at ${SCALE// /, } files}.
syncgate: \`syncgate --config CFG sync bench\`, privilege = "direct", publish = "snapshot" (keep = 2, verify = "changed": a no-op in this build).
ftpsync: \`$FTP\` — $(sed -n '3,$p' "$FTP" | tr '\n' ' ' | sed 's/  */ /g')

| scenario | baseline: median (IQR, min–max; cpu) | syncgate snapshot | ratio of medians (per round; cpu) | target | result | load at start |
|---|---|---|---|---|---|---|
EOF
printf '%s\n' "${ROWS[@]}"
cat <<EOF

### 5. Disk: dest's parent with 2 kept snapshots vs one plain tree (\`du\`, hard links counted once)

| when | plain tree (ftpsync dest) | syncgate: dest's parent | extra | bytes the change brought |
|---|---|---|---|---|
EOF
printf '%s\n' "${DU_ROWS[@]}"
if ((${#RSS_ROWS[@]})); then
  cat <<EOF

### Peak RSS of one \`syncgate sync\` (publish = "snapshot")

| run | largest process of the tree (rsync included; \`/usr/bin/time -v\`) | syncgate's own processes: \`sync\` (gate), \`transfer\` (VmHWM sampled every 20 ms) |
|---|---|---|
EOF
  printf '%s\n' "${RSS_ROWS[@]}"
fi
if ((${#PROF_ROWS[@]})); then
  cat <<EOF

### Where the time goes (rsync = a timing wrapper, stderr lines time-stamped; $PROFILE_RUNS rounds)

| scenario | step | median | min–max | share of the snapshot sync |
|---|---|---|---|---|
EOF
  printf '%s\n' "${PROF_ROWS[@]}"
fi
echo
echo "Notes:"
printf -- '- %s\n' "${NOTES[@]}"
}
report | tee "$W/report.md"
