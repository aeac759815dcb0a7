#!/usr/bin/env bash
# ab.sh: compare two builds of bench/sealkvbench in alternated pairs of tree
# puts, the way the performance notes compare a change with its parent.
#
#   bench/ab.sh BIN_A BIN_B PAIRS TREE [tree flags ...]
#
# Each pair runs both binaries on TREE (a directory, e.g. from
# `sealkvbench genfiles`) into a fresh store, A first in odd pairs and B first
# in even ones, and prints wall, user and system seconds per run; then, per
# pair, which was faster, and the median of B−A. The tree is read from the
# page cache after the first run (warm): this measures sealkv, not the disk.
# Extra flags go to `sealkvbench tree`, e.g. `-j 64 -batch 1000`.
#
# Environment: WORK (/tmp/sealkv-ab) for the store and the key file.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,14p' "$0"; exit 2; }
a=$1 b=$2 pairs=$3 tree=$4
shift 4
WORK=${WORK:-/tmp/sealkv-ab}
mkdir -p "$WORK"
[ -f "$WORK/keys" ] || "$a" keygen "$WORK/keys" >/dev/null
times=$WORK/times.tsv
: > "$times"
run() { # run NAME BIN PAIR [tree flags ...]
	local name=$1 bin=$2 pair=$3
	shift 3
	rm -rf "$WORK/store"
	/usr/bin/time -f "$name	$pair	%e	%U	%S" -a -o "$times" \
		"$bin" tree -store "$WORK/store" -keys "$WORK/keys" "$@" k "$tree" >/dev/null
}
for i in $(seq "$pairs"); do
	if ((i % 2)); then order="A B"; else order="B A"; fi
	for v in $order; do
		if [ "$v" = A ]; then run A "$a" "$i" "$@"; else run B "$b" "$i" "$@"; fi
	done
done
awk -F'\t' '
	{ t[$1, $2] = $3; u[$1, $2] = $4; s[$1, $2] = $5; n = ($2 > n ? $2 : n) }
	END {
		printf "pair\tA s (user, sys)\tB s (user, sys)\tfaster\n"
		for (i = 1; i <= n; i++) {
			d = t["B", i] - t["A", i]
			printf "%d\t%.2f (%.2f, %.2f)\t%.2f (%.2f, %.2f)\t%s\n", i, t["A", i], u["A", i], s["A", i], t["B", i], u["B", i], s["B", i], (d < 0 ? "B" : "A")
			print d > "/dev/stderr"
		}
	}' "$times" 2> "$WORK/diffs"
sort -g "$WORK/diffs" | awk '
	{ d[NR] = $1; if ($1 < 0) wins++ }
	END {
		m = (NR % 2) ? d[(NR + 1) / 2] : (d[NR / 2] + d[NR / 2 + 1]) / 2
		printf "B faster in %d of %d pairs; median B-A %+.2f s\n", wins, NR, m
	}'
