#!/usr/bin/env bash
# bench/run.sh — sealkv against restic and borg on the same bytes, same disk.
#
#   bench/run.sh [file|versioned|smallfiles|budget|all]      (default: file)
#
# Modes
#   file        one random file of SIZE bytes: put / get / dedup re-put
#               (sealkv), backup / restore / backup --force (restic),
#               create / extract / create --files-cache=disabled (borg); plus
#               the disk's limit measured by dd conv=fdatasync in the same run.
#   versioned   VERSIONS (8 releases of golang.org/x/tools, from the module
#               cache via "go mod download -json") stored one after the other,
#               file by file (sealkv: one Data per file, children of their
#               directory's Data), compression off on every side.
#   smallfiles  FILES files of FILE_SIZE random bytes in one tree (1000 per
#               directory): sealkv tree put vs restic backup vs borg create.
#   budget      the CPU budget of file mode's put: the file put from the page
#               cache into a store on the disk and one on tmpfs (SHM), with
#               user and system CPU, against dd's disk limit; and the
#               single-core cost of each CPU stage (go test -bench -cpu 1);
#               and the dedup re-put of file mode, from the page cache; and
#               on tmpfs, one Put on one core against two such Puts at once
#               (how far two cores scale this work with nothing shared).
#               Not part of "all"; sealkv only.
#
# Environment (defaults)
#   SIZE=1G          file mode size (numfmt IEC suffixes: 64M, 1G, ...)
#   RUNS=3           runs per operation; tables show medians
#   WORK=/tmp/sealkv-bench   scratch directory (data, stores, repos, logs)
#   DROP_CACHES=1    sync + drop the page cache before every timed step
#   SEALKV_COMPRESSION=zstd   sealkv's compression in file mode (zstd|none)
#   JOBS=64          sealkv files put concurrently (tree modes; each Put is
#                    durable on return, so concurrent Puts share fsyncs)
#   BATCH=1000       files per kv.Batch in the "sealkv-batch" rows of the
#                    tree modes (durable when its batch commits)
#   VERSIONS="v0.45.0 ... v0.52.0"   x/tools releases for versioned mode
#   SOURCE_SLICES=2048/8192/65536   slice sizes of the versioned mode's
#                    "sealkv-batch-1+0" rows (store option Min/Avg/MaxSliceSize)
#   FILES=100000 FILE_SIZE=4096      small-files mode
#   KEEP=0           keep stores/repos after the run
#   HOLD_MEMORY=1    on a VM with free page reporting, stop it for the run
#                    and touch the memory once (see hold_memory)
#
# Timing: wall clock of the command; write steps (put/backup/create) are
# timed up to and including a following `sync`, so a tool that leaves its
# data in the page cache pays for writing it like one that fsyncs. Peak RSS
# is "Maximum resident set size" from /usr/bin/time -v. MB = 10^6 bytes.
# Stored bytes are `du -sb` of the store/repository directory.
set -euo pipefail

MODE=${1:-file}
RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/sealkv-bench}
DROP_CACHES=${DROP_CACHES:-1}
SEALKV_COMPRESSION=${SEALKV_COMPRESSION:-zstd}
JOBS=${JOBS:-64}
BATCH=${BATCH:-1000}
SOURCE_SLICES=${SOURCE_SLICES:-2048/8192/65536}
VERSIONS=${VERSIONS:-"v0.45.0 v0.46.0 v0.47.0 v0.48.0 v0.49.0 v0.50.0 v0.51.0 v0.52.0"}
FILES=${FILES:-100000}
FILE_SIZE=${FILE_SIZE:-4096}
KEEP=${KEEP:-0}
HOLD_MEMORY=${HOLD_MEMORY:-1}
SIZE_BYTES=$(numfmt --from=iec "${SIZE:-1G}")

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$WORK/bin/sealkvbench
# A warm run (DROP_CACHES=0) keeps its raw results and logs apart from a
# cold one, so that running both in a row loses neither.
WARM=
if [ "$DROP_CACHES" = 0 ]; then WARM=-warm; fi
RES=$WORK/results-$MODE$WARM.tsv
LOG=$WORK/log$WARM
export RESTIC_PASSWORD_FILE=$WORK/restic-password
export RESTIC_CACHE_DIR=$WORK/restic-cache
export BORG_PASSPHRASE=sealkv-bench
export BORG_BASE_DIR=$WORK/borg-base
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes

for t in restic borg /usr/bin/time go python3 numfmt awk; do
	command -v "$t" >/dev/null || { echo "run.sh: $t not found" >&2; exit 1; }
done

mkdir -p "$WORK/bin" "$LOG"
echo sealkv-bench >"$RESTIC_PASSWORD_FILE"

note() { echo "# $*" >&2; }

drop_caches() {
	[ "$DROP_CACHES" = 1 ] || return 0
	sync
	if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
		note "cannot drop the page cache (not root?): reads are warm for every tool alike"
		DROP_CACHES=0
	fi
}

now() { date +%s.%N; }

# hold_memory: a VM with free page reporting (Linux page_reporting, as on
# this project's Firecracker VMs) hands every page the guest frees back to
# the host within seconds, and the guest's next use of it pays a host fault.
# drop_caches frees the whole page cache before every step, so each step
# wrote its output into unbacked memory: the same cold 1 GiB Get spent
# 0.55-1.8 s of system CPU from run to run, and two cores gained little
# over one (docs/performance.md, 2026-12-07 session 18). This stops the
# reporting for the run (an order above the largest free block, 10, is never
# reported), touches the memory once so the host backs it, and restores the
# setting at exit. HOLD_MEMORY=0 measures the VM as it comes.
REPORTING=/sys/module/page_reporting/parameters/page_reporting_order
REPORTING_WAS=
hold_memory() {
	[ "$HOLD_MEMORY" = 1 ] && [ -w "$REPORTING" ] || return 0
	REPORTING_WAS=$(cat "$REPORTING")
	echo 11 >"$REPORTING"
	local mib shm=${SHM:-/dev/shm}
	mib=$(awk '/MemAvailable/ {printf "%d", $2 / 1024 * 0.75}' /proc/meminfo)
	note "free page reporting off (order $REPORTING_WAS -> 11); touching $mib MiB of memory once"
	dd if=/dev/zero of="$shm/sealkv-bench-fill" bs=1M count="$mib" status=none || true
	rm -f "$shm/sealkv-bench-fill"
}
release_memory() {
	[ -n "$REPORTING_WAS" ] && echo "$REPORTING_WAS" >"$REPORTING"
	return 0
}
memory_state() {
	if [ -r "$REPORTING" ]; then echo "page_reporting_order=$(cat "$REPORTING")"; else echo "no page reporting"; fi
}

# timed TOOL OP RUN SYNC -- CMD...: runs CMD under /usr/bin/time -v (stdout
# and stderr to $LOG), optionally followed by sync inside the timed region,
# and appends "tool op run seconds rss_kib user_s system_s" to $RES.
timed() {
	local tool=$1 op=$2 run=$3 dosync=$4
	shift 5
	local tf=$LOG/$tool-$op-$run.time out=$LOG/$tool-$op-$run.out
	drop_caches
	local t0 t1
	t0=$(now)
	if ! /usr/bin/time -v -o "$tf" "$@" >"$out" 2>&1; then
		echo "run.sh: $tool $op failed, see $out:" >&2
		tail -20 "$out" >&2
		exit 1
	fi
	[ "$dosync" = sync ] && sync
	t1=$(now)
	local rss cpu
	rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
	cpu=$(awk -F': ' '/User time \(seconds\)/ {u = $2} /System time \(seconds\)/ {s = $2} END {print u "\t" s}' "$tf")
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$op" "$run" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" "$rss" "$cpu" >>"$RES"
}

# stored TOOL OP RUN DIR [BASE_APPARENT BASE_ALLOCATED]: records the size of
# DIR (minus a base): apparent bytes (du -sb) and allocated bytes (du -s
# --block-size=1, which counts preallocated space such as Pebble's WAL files).
stored() {
	local a u
	a=$(du -sb "$4" | cut -f1)
	u=$(du -s --block-size=1 "$4" | cut -f1)
	printf '%s\t%s\t%s\tstored\t%s\t%s\n' "$1" "$2" "$3" "$((a - ${5:-0}))" "$((u - ${6:-0}))" >>"$RES"
}
sizes() { echo "$(du -sb "$1" | cut -f1) $(du -s --block-size=1 "$1" | cut -f1)"; }

build() {
	note "building sealkvbench from $ROOT"
	(cd "$ROOT" && go build -o "$BIN" ./bench/sealkvbench)
}

fresh_sealkv() { rm -rf "$1"; "$BIN" keygen "$WORK/sealkv.keys"; }
fresh_restic() { rm -rf "$1" "$RESTIC_CACHE_DIR"; restic init --repository-version 2 -r "$1" >/dev/null; }
fresh_borg() { rm -rf "$1" "$BORG_BASE_DIR"; borg init -e repokey "$1" >/dev/null 2>&1; }

same() { cmp -s "$1" "$2" || { echo "run.sh: restored $2 differs from $1" >&2; exit 1; }; }

header() {
	echo
	echo "<!-- $(date -u +%FT%TZ) $(uname -n); $(uptime | sed 's/.*load/load/'); $(nproc) cores;" \
		"sealkv $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo +dirty);" \
		"$(restic version | cut -d' ' -f1-2); $(borg --version); runs=$RUNS; drop_caches=$DROP_CACHES; $(memory_state) -->"
}

# ---------------------------------------------------------------- file mode
# The random input of file and budget mode.
DATA=$WORK/data/file.bin

# random_input writes SIZE random bytes to $DATA unless it holds them.
random_input() {
	mkdir -p "$WORK/data"
	if [ ! -f "$DATA" ] || [ "$(stat -c %s "$DATA")" != "$SIZE_BYTES" ]; then
		note "writing $SIZE_BYTES random bytes to $DATA"
		head -c "$SIZE_BYTES" /dev/urandom >"$DATA"
	fi
}

# timed_dd RUN: the disk limit's dd, SIZE bytes (at least 1 MiB) with fdatasync.
timed_dd() {
	local mib=$((SIZE_BYTES >> 20))
	[ "$mib" -ge 1 ] || mib=1
	timed disk "dd write (fdatasync)" "$1" nosync -- dd if=/dev/zero of="$WORK/dd.tmp" bs=1M count="$mib" conv=fdatasync
	rm -f "$WORK/dd.tmp"
}

mode_file() {
	local data=$DATA
	random_input
	: >"$RES"
	for run in $(seq "$RUNS"); do
		note "run $run/$RUNS: dd"
		timed_dd "$run"

		note "run $run/$RUNS: sealkv"
		local st=$WORK/sealkv-store out=$WORK/restore
		fresh_sealkv "$st"
		timed sealkv put "$run" sync -- "$BIN" put -store "$st" -keys "$WORK/sealkv.keys" -compression "$SEALKV_COMPRESSION" file "$data"
		stored sealkv put "$run" "$st"
		local base
		base=$(sizes "$st")
		rm -rf "$out"; mkdir -p "$out"
		timed sealkv get "$run" nosync -- "$BIN" get -store "$st" -keys "$WORK/sealkv.keys" file "$out/file.bin"
		same "$data" "$out/file.bin"; rm -rf "$out"
		timed sealkv "dedup re-put" "$run" sync -- "$BIN" put -store "$st" -keys "$WORK/sealkv.keys" -compression "$SEALKV_COMPRESSION" copy "$data"
		stored sealkv "dedup re-put" "$run" "$st" $base
		# Scaling with cores: the same Put on one core.
		fresh_sealkv "$st"
		timed sealkv "put GOMAXPROCS=1" "$run" sync -- env GOMAXPROCS=1 "$BIN" put -store "$st" -keys "$WORK/sealkv.keys" -compression "$SEALKV_COMPRESSION" file "$data"

		note "run $run/$RUNS: restic"
		local repo=$WORK/restic-repo
		fresh_restic "$repo"
		timed restic put "$run" sync -- restic -r "$repo" backup "$data"
		stored restic put "$run" "$repo"
		base=$(sizes "$repo")
		rm -rf "$out"; mkdir -p "$out"
		timed restic get "$run" nosync -- restic -r "$repo" restore latest --target "$out"
		same "$data" "$out$data"; rm -rf "$out"
		timed restic "dedup re-put" "$run" sync -- restic -r "$repo" backup --force "$data"
		stored restic "dedup re-put" "$run" "$repo" $base

		note "run $run/$RUNS: borg"
		repo=$WORK/borg-repo
		fresh_borg "$repo"
		timed borg put "$run" sync -- borg create "$repo::a" "$data"
		stored borg put "$run" "$repo"
		base=$(sizes "$repo")
		rm -rf "$out"; mkdir -p "$out"
		timed borg get "$run" nosync -- bash -c "cd '$out' && exec borg extract '$repo::a'"
		same "$data" "$out$data"; rm -rf "$out"
		timed borg "dedup re-put" "$run" sync -- borg create --files-cache=disabled "$repo::b" "$data"
		stored borg "dedup re-put" "$run" "$repo" $base
	done
	header
	echo "Single file, $SIZE_BYTES random bytes; medians of $RUNS runs. put/backup/create timed through a final sync. sealkv compression: $SEALKV_COMPRESSION (8+2 shards); restic 0.14 repo v2, compression auto; borg 1.2 default compression lz4; dedup re-put = same bytes under a new key / snapshot (restic --force, borg --files-cache=disabled, so all three re-read and re-chunk)."
	echo
	table_file
}

table_file() {
	python3 - "$RES" "$SIZE_BYTES" <<'EOF'
import sys, statistics as S
res, size = sys.argv[1], int(sys.argv[2])
t, rss, st, al = {}, {}, {}, {}
for line in open(res):
    tool, op, run, a, b, *c = line.rstrip("\n").split("\t")
    if a == "stored":
        st.setdefault((tool, op), []).append(int(b)); al.setdefault((tool, op), []).append(int(c[0]))
    else:
        t.setdefault((tool, op), []).append(float(a))
        if b: rss.setdefault((tool, op), []).append(int(b))
order = [("disk", "dd write (fdatasync)")] + [(tool, op) for op in ("put", "get", "dedup re-put") for tool in ("sealkv", "restic", "borg")] + [("sealkv", "put GOMAXPROCS=1")]
mbs = {k: size / S.median(v) / 1e6 for k, v in t.items()}
print("| tool | operation | MB/s (median) | min–max MB/s | peak RSS MiB | stored bytes (du -sb) | allocated bytes (du -s) | MB/s vs restic | stored vs restic |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for k in order:
    if k not in t: continue
    tool, op = k
    lo, hi = size / max(t[k]) / 1e6, size / min(t[k]) / 1e6
    r = "%.0f" % (S.median(rss[k]) / 1024) if k in rss else ""
    s = "%d" % S.median(st[k]) if k in st else "—"
    u = "%d" % S.median(al[k]) if k in al else "—"
    ref = ("restic", op)
    vs = "%.2f×" % (mbs[k] / mbs[ref]) if ref in mbs and tool != "disk" else "—"
    svs = "%.3f×" % (S.median(st[k]) / S.median(st[ref])) if k in st and ref in st and S.median(st[ref]) > 0 else "—"
    print(f"| {tool} | {op} | {mbs[k]:.0f} | {lo:.0f}–{hi:.0f} | {r} | {s} | {u} | {vs} | {svs} |")
# Targets of the performance issue, from the medians above.
disk = ("disk", "dd write (fdatasync)")
if disk in mbs and ("sealkv", "put") in mbs:
    k, m = 8, 2
    limit = mbs[disk] * k / (k + m)
    print()
    print(f"Disk limit = dd × k/(k+m) = {mbs[disk]:.0f} × {k}/{k+m} = {limit:.0f} MB/s; sealkv put = {mbs[('sealkv', 'put')] / limit:.0%} of it (target ≥ 70%).")
if ("sealkv", "put GOMAXPROCS=1") in mbs:
    print(f"Scaling: put with 2 cores / 1 core = {mbs[('sealkv', 'put')] / mbs[('sealkv', 'put GOMAXPROCS=1')]:.2f}× (target ≥ 1.7×).")
EOF
}

# ------------------------------------------------------------- budget mode
# Where a large Put's time goes, against the disk limit: the same file put
# from the page cache (warm, so reading the input costs CPU but no disk time)
# into a store on the disk and into one on tmpfs (no disk at all), each with
# its user and system CPU; dd for the disk limit; and the single-core cost
# of each CPU stage from the Go benchmarks. The page cache is not dropped.

# budget_put STORE PROCS RUN [dedup]: one timed put of the page-cached file
# into a fresh STORE, with GOMAXPROCS=PROCS unless PROCS is "all"; with
# "dedup", then a timed re-put of it under a new key.
budget_put() {
	local st=$1 procs=$2 run=$3 envs=() on
	on=$(df --output=fstype "$(dirname "$st")" | tail -1)
	[ "$procs" = all ] || { envs=(GOMAXPROCS="$procs"); on="$on, GOMAXPROCS=$procs"; }
	local put=(env "${envs[@]}" "$BIN" put -store "$st" -keys "$WORK/sealkv.keys" -compression "$SEALKV_COMPRESSION")
	fresh_sealkv "$st"
	sync
	timed sealkv "put to $on" "$run" sync -- "${put[@]}" file "$DATA"
	[ "${4:-}" != dedup ] || timed sealkv "dedup re-put to $on" "$run" sync -- "${put[@]}" copy "$DATA"
	rm -rf "$st"
}

# budget_pair DIR RUN: two GOMAXPROCS=1 Puts of the same file at once, into
# two stores in DIR, timed together. Nothing is shared between them but the
# machine, so their total rate over one such Put's alone is what two cores
# give this work here when no goroutine waits for another (kernel and VM
# included): the reference for the scaling of one Put on two cores.
budget_pair() {
	local a=$1/sealkv-budget-a b=$1/sealkv-budget-b on
	on=$(df --output=fstype "$1" | tail -1)
	local put=("$BIN" put -keys "$WORK/sealkv.keys" -compression "$SEALKV_COMPRESSION")
	fresh_sealkv "$a"
	fresh_sealkv "$b"
	sync
	timed sealkv "2 puts at once to $on, GOMAXPROCS=1 each" "$2" sync -- env GOMAXPROCS=1 bash -c \
		'd=$1 a=$2 b=$3; shift 3; "$@" -store "$a" file "$d" & p=$!; "$@" -store "$b" file "$d" || exit 1; wait $p' \
		pair "$DATA" "$a" "$b" "${put[@]}"
	rm -rf "$a" "$b"
}

mode_budget() {
	local shm=${SHM:-/dev/shm} bench=$LOG/budget-go-bench.txt
	[ -d "$shm" ] || { echo "run.sh: no tmpfs at $shm (set SHM)" >&2; exit 1; }
	random_input
	DROP_CACHES=0
	: >"$RES"
	for run in $(seq "$RUNS"); do
		note "run $run/$RUNS: dd; sealkv put to disk and dedup re-put, put to disk on one core; put to tmpfs, on one core, and two one-core puts at once"
		sync
		timed_dd "$run"
		cat "$DATA" >/dev/null
		# The steps of each scaling ratio run back to back, so that they
		# see the machine in the same state (the ratios are taken run by
		# run, below).
		budget_put "$WORK/sealkv-store" all "$run" dedup
		budget_put "$WORK/sealkv-store" 1 "$run"
		budget_put "$shm/sealkv-budget-store" all "$run"
		budget_put "$shm/sealkv-budget-store" 1 "$run"
		budget_pair "$shm" "$run"
	done
	note "single-core stage benchmarks (go test -cpu 1 -count $RUNS)"
	(cd "$ROOT" && go test -run '^$' -bench '^(BenchmarkSliceID|BenchmarkCompress|BenchmarkSeal|BenchmarkErasure)$' -cpu 1 -count "$RUNS" . &&
		cd internal/chunker && go test -run '^$' -bench '^BenchmarkCut$' -cpu 1 -count "$RUNS" .) >"$bench"
	header
	echo "CPU budget of a large Put: $SIZE_BYTES random bytes put from the page cache with compression $SEALKV_COMPRESSION and 8+2 shards, the store on the disk and on tmpfs, and re-put under a new key (dedup: chunking and naming only); user and system CPU from /usr/bin/time; medians of $RUNS runs. Stage costs are single-core Go benchmarks on 256 KiB slices (the chunker on 64 MiB)."
	echo
	python3 - "$RES" "$SIZE_BYTES" "$bench" "$(nproc)" <<'EOF2'
import sys, statistics as S
res, size, bench, cores = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t, usr, sysc = {}, {}, {}
for line in open(res):
    tool, op, run, a, b, u, s = line.rstrip("\n").split("\t")
    t.setdefault(op, []).append(float(a)); usr.setdefault(op, []).append(float(u)); sysc.setdefault(op, []).append(float(s))
ns = lambda sec: sec * 1e9 / size  # seconds per size bytes -> ns per ClearText byte
disk = size / S.median(t["dd write (fdatasync)"]) / 1e6
limit = disk * 8 / 10
print(f"Disk: dd {disk:.0f} MB/s; limit = dd × 8/10 = {limit:.0f} MB/s; the performance issue's target, 70% of it = {0.7 * limit:.0f} MB/s.")
print()
print(f"| Put | MB/s | % of disk limit | user ns/B | system ns/B | CPU ns/B | CPU-bound ceiling on {cores} cores, MB/s | ceiling, % of disk limit |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
puts = sorted((k for k in t if " to " in k), key=lambda k: (k.startswith("dedup"), k.startswith("2 puts"), k))
# The pair row ("2 puts at once ...") stores the file twice.
times = lambda op: 2 if op.startswith("2 puts") else 1
mbs = {op: times(op) * size / S.median(t[op]) / 1e6 for op in puts}
for op in puts:
    u, s = ns(S.median(usr[op]) / times(op)), ns(S.median(sysc[op]) / times(op))
    ceil = cores * 1e3 / (u + s)
    # Against the disk limit only what writes shards; the dedup re-put writes none.
    pct = (lambda x: f"{x / limit:.0%}") if op.startswith("put") else (lambda x: "—")
    c = "— | —" if "GOMAXPROCS" in op else f"{ceil:.0f} | {pct(ceil)}"
    print(f"| {op} | {mbs[op]:.0f} | {pct(mbs[op])} | {u:.2f} | {s:.2f} | {u + s:.2f} | {c} |")
# Scaling from paired runs: each run's steps ran within seconds of each
# other, so the ratio of one run's pair cancels the drift of this VM's CPU
# and disk over minutes, which medians of separate steps do not.
def scaling(fast, slow, k=1):
    r = sorted(k * a / b for a, b in zip(t[slow], t[fast]))
    return f"{S.median(r):.2f}× (runs {r[0]:.2f}–{r[-1]:.2f}×)"
for one in (op for op in puts if op.endswith(", GOMAXPROCS=1")):
    both = one.removesuffix(", GOMAXPROCS=1")
    if both in mbs:
        print()
        print(f"Scaling: {both} with {cores} cores / one core = {scaling(both, one)} (target ≥ 1.7×).")
    pair = "2 puts at once to " + one.removeprefix("put to ").removesuffix(", GOMAXPROCS=1") + ", GOMAXPROCS=1 each"
    if pair in mbs:
        print(f"Reference: two such one-core Puts at once (sharing nothing but the machine) / one alone = {scaling(pair, one, 2)}.")
stages = [("chunker (keyed CDC)", "BenchmarkCut/"), ("SliceID (keyed BLAKE3-512)", "BenchmarkSliceID"),
          ("zstd attempt (random: 16 KiB sample)", "BenchmarkCompress/random-256KiB"), ("seal (AES-256-GCM)", "BenchmarkSeal/seal-256KiB"),
          ("Reed-Solomon 8+2 + checksums", "BenchmarkErasure/encode-8+2")]
mb = {}
for line in open(bench):
    f = line.split()
    if f and f[0].startswith("Benchmark") and "MB/s" in f:
        mb.setdefault(f[0], []).append(float(f[f.index("MB/s") - 1]))
# BenchmarkCut has a vector and a portable sub-benchmark; a Put takes the
# vector one where the CPU has it.
cut = "BenchmarkCut/vector" if "BenchmarkCut/vector" in mb else "BenchmarkCut/portable"
stages[0] = (f"chunker (keyed CDC, {cut.split('/')[1]})", cut)
print()
print("| stage, one core | MB/s | ns/B |")
print("|---|---:|---:|")
tot = 0
for name, key in stages:
    m = S.median(mb[key]); tot += 1e3 / m
    print(f"| {name} | {m:.0f} | {1e3 / m:.2f} |")
print(f"| sum of the stages | {1e3 / tot:.0f} | {tot:.2f} |")
for op in (op for op in puts if op.startswith("put") and "GOMAXPROCS" not in op):
    print(f"| {op}: user CPU not in the stages (Pebble, copies, runtime, cache misses) | | {ns(S.median(usr[op])) - tot:.2f} |")
EOF2
}

# ------------------------------------------------------------ versioned mode
# versioned_sealkv TOOL RUN [FLAGS...]: puts every release into a fresh
# store with sealkvbench tree FLAGS, each release timed, then the store's size.
versioned_sealkv() {
	local tool=$1 run=$2 st=$WORK/sealkv-store i=0
	shift 2
	note "run $run/$RUNS: $tool"
	fresh_sealkv "$st"
	for d in "${dirs[@]}"; do
		i=$((i + 1))
		timed "$tool" "release-$i" "$run" sync -- "$BIN" tree -store "$st" -keys "$WORK/sealkv.keys" -compression none -j "$JOBS" "$@" "release-$i" "$d"
	done
	stored "$tool" all "$run" "$st"
}

mode_versioned() {
	local dirs=() logical=0 nfiles=0
	for v in $VERSIONS; do
		local d
		d=$(cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "golang.org/x/tools@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
		[ -d "$d" ] || { echo "run.sh: go mod download golang.org/x/tools@$v gave no directory" >&2; exit 1; }
		dirs+=("$d")
		logical=$((logical + $(find "$d" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')))
		nfiles=$((nfiles + $(find "$d" -type f | wc -l)))
	done
	note "${#dirs[@]} releases, $nfiles files, $logical bytes"
	: >"$RES"
	for run in $(seq "$RUNS"); do
		local repo i
		versioned_sealkv sealkv "$run"
		versioned_sealkv sealkv-batch "$run" -batch "$BATCH"
		versioned_sealkv sealkv-batch-1+0 "$run" -batch "$BATCH" -shards 1+0 -slices "$SOURCE_SLICES"

		note "run $run/$RUNS: restic"
		repo=$WORK/restic-repo
		fresh_restic "$repo"
		i=0
		for d in "${dirs[@]}"; do
			i=$((i + 1))
			timed restic "release-$i" "$run" sync -- restic -r "$repo" --compression off backup "$d"
		done
		stored restic all "$run" "$repo"

		note "run $run/$RUNS: borg"
		repo=$WORK/borg-repo
		fresh_borg "$repo"
		i=0
		for d in "${dirs[@]}"; do
			i=$((i + 1))
			timed borg "release-$i" "$run" sync -- borg create --compression none "$repo::release-$i" "$d"
		done
		stored borg all "$run" "$repo"
	done
	header
	echo "Versioned dataset: golang.org/x/tools $(echo $VERSIONS | sed 's/ /, /g') ($nfiles files, $logical bytes in all), stored one release after the other, compression off everywhere (sealkv CompressionNone, tree put -j $JOBS, 8+2 shards, each Put durable; sealkv-batch: kv.Batches of $BATCH files; sealkv-batch-1+0: the same with one shard and no parity, i.e. no redundancy like restic and borg, and slices of $SOURCE_SLICES bytes (min/avg/max) sized for source files; restic repo v2 --compression off; borg --compression none). Ingest time = sum over the releases (each through a final sync); medians of $RUNS runs."
	echo
	python3 - "$RES" "$logical" "$nfiles" <<'EOF'
import sys, statistics as S
res, logical, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tot, rss, st, al, first = {}, {}, {}, {}, {}
for line in open(res):
    tool, op, run, a, b, *c = line.rstrip("\n").split("\t")
    if a == "stored":
        st.setdefault(tool, []).append(int(b)); al.setdefault(tool, []).append(int(c[0])); continue
    tot.setdefault((tool, run), 0.0)
    tot[(tool, run)] += float(a)
    if op == "release-1": first.setdefault(tool, []).append(float(a))
    rss.setdefault(tool, []).append(int(b))
tools = ["sealkv", "sealkv-batch", "sealkv-batch-1+0", "restic", "borg"]
sec = {tl: S.median([v for (t, r), v in tot.items() if t == tl]) for tl in tools if any(t == tl for t, _ in tot)}
print("| tool | ingest s (all releases) | MB/s | files/s | first release s | peak RSS MiB (max) | stored bytes (du -sb) | allocated bytes (du -s) | stored / logical | time vs restic | stored vs restic |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for tl in sec:
    s, sb = sec[tl], S.median(st[tl])
    print(f"| {tl} | {s:.1f} | {logical/s/1e6:.1f} | {nfiles/s:.0f} | {S.median(first[tl]):.1f} | {max(rss[tl])/1024:.0f} | {sb} | {S.median(al[tl])} | {sb/logical:.3f} | {s/sec['restic']:.2f}× | {sb/S.median(st['restic']):.3f}× |")
EOF
}

# ----------------------------------------------------------- smallfiles mode
mode_smallfiles() {
	local tree=$WORK/small-$FILES-$FILE_SIZE
	if [ ! -f "$tree/.done" ]; then
		note "generating $FILES files of $FILE_SIZE bytes in $tree"
		rm -rf "$tree"
		"$BIN" genfiles "$tree" "$FILES" "$FILE_SIZE"
		touch "$tree/.done"
	fi
	: >"$RES"
	for run in $(seq "$RUNS"); do
		local st=$WORK/sealkv-store repo=$WORK/restic-repo
		note "run $run/$RUNS: sealkv"
		fresh_sealkv "$st"
		timed sealkv "put tree" "$run" sync -- "$BIN" tree -store "$st" -keys "$WORK/sealkv.keys" -j "$JOBS" small "$tree"
		stored sealkv "put tree" "$run" "$st"
		note "run $run/$RUNS: sealkv, batches of $BATCH"
		fresh_sealkv "$st"
		timed sealkv-batch "put tree" "$run" sync -- "$BIN" tree -store "$st" -keys "$WORK/sealkv.keys" -j "$JOBS" -batch "$BATCH" small "$tree"
		stored sealkv-batch "put tree" "$run" "$st"
		note "run $run/$RUNS: restic"
		fresh_restic "$repo"
		timed restic "put tree" "$run" sync -- restic -r "$repo" backup "$tree"
		stored restic "put tree" "$run" "$repo"
		note "run $run/$RUNS: borg"
		repo=$WORK/borg-repo
		fresh_borg "$repo"
		timed borg "put tree" "$run" sync -- borg create "$repo::small" "$tree"
		stored borg "put tree" "$run" "$repo"
	done
	header
	echo "Small files: $FILES files × $FILE_SIZE random bytes (1000 per directory), one tree put (sealkv: one Data per file and directory, -j $JOBS, each Put durable; sealkv-batch: files in kv.Batches of $BATCH, each durable when its batch commits) vs restic backup vs borg create, default compression, through a final sync; medians of $RUNS runs."
	echo
	python3 - "$RES" "$FILES" "$FILE_SIZE" <<'EOF'
import sys, statistics as S
res, n, fs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t, rss, st, al = {}, {}, {}, {}
for line in open(res):
    tool, op, run, a, b, *c = line.rstrip("\n").split("\t")
    if a == "stored": st.setdefault(tool, []).append(int(b)); al.setdefault(tool, []).append(int(c[0]))
    else:
        t.setdefault(tool, []).append(float(a)); rss.setdefault(tool, []).append(int(b))
print("| tool | seconds (median) | files/s | MB/s | peak RSS MiB | stored bytes (du -sb) | allocated bytes (du -s) | files/s vs restic | stored vs restic |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for tl in ("sealkv", "sealkv-batch", "restic", "borg"):
    if tl not in t: continue
    s, sb = S.median(t[tl]), S.median(st[tl])
    print(f"| {tl} | {s:.1f} | {n/s:.0f} | {n*fs/s/1e6:.1f} | {S.median(rss[tl])/1024:.0f} | {sb} | {S.median(al[tl])} | {S.median(t['restic'])/s:.2f}× | {sb/S.median(st['restic']):.3f}× |")
EOF
}

cleanup() {
	release_memory
	[ "$KEEP" = 1 ] && return 0
	rm -rf "$WORK/sealkv-store" "$WORK/restic-repo" "$WORK/borg-repo" "$WORK/restore" "$WORK/dd.tmp" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR" "${SHM:-/dev/shm}/sealkv-budget-store"
}
trap cleanup EXIT

build
hold_memory
case $MODE in
file) mode_file ;;
versioned) mode_versioned ;;
smallfiles) mode_smallfiles ;;
budget) mode_budget ;;
all)
	MODE=file RES=$WORK/results-file$WARM.tsv mode_file
	RES=$WORK/results-versioned$WARM.tsv mode_versioned
	RES=$WORK/results-smallfiles$WARM.tsv mode_smallfiles
	;;
*)
	echo "usage: $0 [file|versioned|smallfiles|budget|all]" >&2
	exit 64
	;;
esac
