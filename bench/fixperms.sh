#!/usr/bin/env bash
# Benchmark: fix_tree vs. `chown -R` + `chmod -R` on a tree of small files.
#
#   bench/fixperms.sh            # 1000 dirs x 100 files = 100,000 files
#   NDIRS=10 NFILES=10 bench/fixperms.sh
#
# The tree is created under $BENCH_TMPDIR (default: $TMPDIR or /tmp) and
# removed afterwards. Honours CARGO_TARGET_DIR.
set -euo pipefail

NDIRS=${NDIRS:-1000}
NFILES=${NFILES:-100}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
uid=$(id -u)
gid=$(id -g)

(cd "$repo" && cargo build --quiet --release --example fixperms_bench)
bench_bin=$target/release/examples/fixperms_bench

work=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/fixperms-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/mirror

now_ns() { date +%s%N; }
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }
# path, inode and ctime (ns resolution) of every entry, sorted by path
snapshot() { find "$tree" -printf '%p %i %C@\n' | LC_ALL=C sort >"$1"; }
# number of entries whose inode or ctime differs between two snapshots
changed() {
    awk 'NR == FNR { s[$1] = $2 " " $3; next } s[$1] != $2 " " $3 { n++ } END { print n + 0 }' "$1" "$2"
}
# wait until the clock has moved past every timestamp written so far
tick() { sleep 1.1; }

echo "generating $NDIRS dirs x $NFILES files under $tree ..."
t=$(now_ns)
mkdir "$tree"
for ((d = 0; d < NDIRS; d++)); do
    dir=$(printf '%s/d%04d' "$tree" "$d")
    mkdir "$dir"
    for ((f = 0; f < NFILES; f++)); do
        printf 'x' >"$dir/f$f.iso"
    done
done
chown -R "$uid:$gid" "$tree"
chmod -R u=rwX,g=rX,o= "$tree" # files 0640, dirs 0750: matches the policy
echo "generated in $(ms_since "$t") ms"
entries=$(find "$tree" | wc -l)
tick

# (1) fix_tree on the already-correct tree
snapshot "$work/s0"
t=$(now_ns)
fix_out=$("$bench_bin" "$tree")
fix_wall=$(ms_since "$t")
snapshot "$work/s1"
fix_int=$(sed -n 's/^fix_tree_ms=\([0-9.]*\).*/\1/p' <<<"$fix_out")
fix_changed=$(sed -n 's/.* changed=\([0-9]*\).*/\1/p' <<<"$fix_out")
fix_ctime=$(changed "$work/s0" "$work/s1")
tick

# (2) chown -R + chmod -R on the same (still correct) tree
t=$(now_ns)
chown -R "$uid:$gid" "$tree"
chown_ms=$(ms_since "$t")
t=$(now_ns)
chmod -R u=rwX,g=rX,o= "$tree"
chmod_ms=$(ms_since "$t")
both_ms=$((chown_ms + chmod_ms))
snapshot "$work/s2"
both_ctime=$(changed "$work/s1" "$work/s2")
tick

# (extra) fix_tree on a fully drifted tree: every file 0644, every dir 0755
chmod -R u=rwX,go=rX "$tree"
tick
snapshot "$work/s3"
t=$(now_ns)
drift_out=$("$bench_bin" "$tree")
drift_wall=$(ms_since "$t")
snapshot "$work/s4"
drift_int=$(sed -n 's/^fix_tree_ms=\([0-9.]*\).*/\1/p' <<<"$drift_out")
drift_changed=$(sed -n 's/.* changed=\([0-9]*\).*/\1/p' <<<"$drift_out")
drift_ctime=$(changed "$work/s3" "$work/s4")

echo
echo "tree: $NDIRS dirs x $NFILES files, $entries entries (incl. root), fs: $(df --output=fstype "$tree" | tail -n 1), policy $uid:$gid 0640/0750"
printf '%-48s %10s %12s %22s\n' "operation" "wall ms" "in-proc ms" "ctime changed/entries"
printf '%-48s %10s %12s %22s\n' "(1) fix_tree, tree already correct" "$fix_wall" "$fix_int" "$fix_ctime/$entries (changed=$fix_changed)"
printf '%-48s %10s %12s %22s\n' "(2) chown -R + chmod -R, tree already correct" "$both_ms" "-" "$both_ctime/$entries"
printf '%-48s %10s %12s %22s\n' "    of which chown -R" "$chown_ms" "-" ""
printf '%-48s %10s %12s %22s\n' "    of which chmod -R" "$chmod_ms" "-" ""
printf '%-48s %10s %12s %22s\n' "(x) fix_tree, every entry drifted (0644/0755)" "$drift_wall" "$drift_int" "$drift_ctime/$entries (changed=$drift_changed)"
