#!/usr/bin/env bash
# A small SeaweedFS cluster on 127.0.0.1 for sealkv's s3store tests and
# benchmarks: one master, N volume servers (one rack each), one filer with
# the S3 gateway. Every listener binds to 127.0.0.1; telemetry and the extra
# gateways (Iceberg, Lance) are off; all data lives in one directory.
#
# Failure domains: bucket i (sealkv-i by default) is pinned to rack i, i.e.
# to volume server i, with a filer path rule (fs.configure -rack), so the
# shards sealkv puts in bucket i live on volume server i only. Killing volume
# server i loses exactly domain i. The master and the filer (metadata) are
# shared: this cluster models disk/server failures, not a filer failure.
#
# Usage:
#   cluster.sh start            start everything, wait until every bucket
#                               accepts a write, print the settings (env)
#   cluster.sh stop             stop everything, remove the data directory
#                               (kept with SWFS_KEEP=1)
#   cluster.sh kill-volume I    SIGKILL volume server I
#   cluster.sh start-volume I   start volume server I again (same data)
#   cluster.sh env              print the settings of a running cluster
#
# Environment (all optional):
#   SWFS_DIR        data directory (start: default a new mktemp -d; other
#                   commands: default the one recorded by the last start)
#   SWFS_BASE_PORT  first port (default 23300). Uses BASE (master),
#                   BASE+10+i (volume i), BASE+20 (filer), BASE+30 (S3),
#                   and the same +10000 for their gRPC ports (SeaweedFS
#                   derives gRPC ports that way; the S3 gateway ignores a
#                   filer gRPC port given otherwise).
#   SWFS_VOLUMES    number of volume servers = buckets (default 3)
#   SWFS_BUCKET     bucket name prefix (default sealkv-)
#   WEED            the weed binary (default: scripts/seaweedfs/build.sh)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${SWFS_STATE:-${TMPDIR:-/tmp}/sealkv-seaweedfs.last}"
BASE="${SWFS_BASE_PORT:-23300}"
NVOL="${SWFS_VOLUMES:-3}"
BUCKET="${SWFS_BUCKET:-sealkv-}"
ACCESS=sealkv
SECRET=sealkv-secret-key

log() { echo "cluster.sh: $*" >&2; }

weed_bin() {
	if [[ -n "${WEED:-}" ]]; then echo "$WEED"; else "$HERE/build.sh"; fi
}

data_dir() {
	if [[ -n "${SWFS_DIR:-}" ]]; then echo "$SWFS_DIR"; return; fi
	if [[ -f "$STATE" ]]; then cat "$STATE"; return; fi
	log "no cluster recorded in $STATE; set SWFS_DIR"
	exit 1
}

# load the ports and sizes a start recorded in DIR/config
load() {
	DIR="$(data_dir)"
	# shellcheck disable=SC1091
	source "$DIR/config"
}

master_port() { echo "$BASE"; }
volume_port() { echo $((BASE + 10 + $1)); }
filer_port() { echo $((BASE + 20)); }
s3_port() { echo $((BASE + 30)); }
grpc() { echo $(($1 + 10000)); } # SeaweedFS derives gRPC ports this way

# spawn NAME ARGS...: run weed detached, logging to DIR/logs/NAME.log
spawn() {
	local name=$1
	shift
	(cd "$DIR" && exec "$W" -logdir="$DIR/logs" "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null) &
	echo $! >"$DIR/pids/$name"
}

alive() { [[ -f "$DIR/pids/$1" ]] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null; }

wait_http() { # URL SECONDS
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		if curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; then return 0; fi
		sleep 0.2
	done
	log "timeout waiting for $1"
	return 1
}

start_volume() {
	local i=$1 mp
	mp=$(master_port)
	mkdir -p "$DIR/vol$i"
	spawn "volume$i" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-port="$(volume_port "$i")" -port.grpc="$(grpc "$(volume_port "$i")")" \
		-dir="$DIR/vol$i" -max=16 -dataCenter=dc1 -rack="rack$i" \
		-master="127.0.0.1:$mp"
}

cmd_start() {
	W="$(weed_bin)"
	DIR="${SWFS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/sealkv-seaweedfs.XXXXXX")}"
	mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/master" "$DIR/filer"
	cat >"$DIR/config" <<EOF
BASE=$BASE
NVOL=$NVOL
BUCKET=$BUCKET
W=$W
EOF
	echo "$DIR" >"$STATE"
	cat >"$DIR/s3.json" <<EOF
{"identities": [{"name": "sealkv", "credentials": [{"accessKey": "$ACCESS", "secretKey": "$SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
	local mp fp sp t0=$SECONDS
	mp=$(master_port)
	fp=$(filer_port)
	sp=$(s3_port)
	log "starting in $DIR (ports $BASE..$((BASE + 30)) and $((BASE + 10000))..$((BASE + 10030)))"
	spawn master master -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$mp" -port.grpc="$(grpc "$mp")" \
		-mdir="$DIR/master" -volumeSizeLimitMB=256 -defaultReplication=000 -telemetry=false
	wait_http "http://127.0.0.1:$mp/cluster/status" 60
	for ((i = 0; i < NVOL; i++)); do start_volume "$i"; done
	spawn filer filer -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$fp" -port.grpc="$(grpc "$fp")" \
		-master="127.0.0.1:$mp" -defaultStoreDir="$DIR/filer" -localSocket="$DIR/filer.sock" \
		-s3 -s3.port="$sp" -s3.port.grpc="$(grpc "$sp")" -s3.port.iceberg=0 -s3.port.lance=0 \
		-s3.config="$DIR/s3.json" -s3.localSocket="$DIR/s3.sock"
	wait_http "http://127.0.0.1:$fp/" 60
	for ((i = 0; i < NVOL; i++)); do
		wait_http "http://127.0.0.1:$(volume_port "$i")/status" 60
	done
	# Pin bucket i to rack i (= volume server i).
	local script=""
	for ((i = 0; i < NVOL; i++)); do
		script+="fs.configure -locationPrefix=/buckets/$BUCKET$i/ -rack=rack$i -volumeGrowthCount=2 -apply"$'\n'
	done
	echo "$script" | (cd "$DIR" && "$W" shell -master="127.0.0.1:$mp" -filer="127.0.0.1:$fp") >>"$DIR/logs/shell.log" 2>&1
	# The cluster accepts writes once the master has seen the volume servers
	# and grown volumes for each pinned collection: poll with a probe file
	# per bucket through the filer.
	for ((i = 0; i < NVOL; i++)); do
		local ok=
		for ((n = 0; n < 300; n++)); do
			if echo probe | curl -fsS -o /dev/null --max-time 10 -F "file=@-" "http://127.0.0.1:$fp/buckets/$BUCKET$i/.sealkv-probe" 2>/dev/null; then
				curl -fsS -o /dev/null -X DELETE "http://127.0.0.1:$fp/buckets/$BUCKET$i/.sealkv-probe" || true
				ok=1
				break
			fi
			sleep 0.2
		done
		[[ -n "$ok" ]] || { log "bucket $BUCKET$i never accepted a write; see $DIR/logs"; exit 1; }
	done
	# The S3 gateway answers (403 to an unsigned request) once it is up.
	for ((n = 0; n < 300; n++)); do
		[[ "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$sp/" 2>/dev/null)" =~ ^[1-5] ]] && break
		sleep 0.2
	done
	log "ready after $((SECONDS - t0)) s"
	cmd_env
}

cmd_env() {
	[[ -n "${DIR:-}" ]] || load
	echo "SWFS_DIR=$DIR"
	echo "SWFS_S3_ENDPOINT=127.0.0.1:$(s3_port)"
	echo "SWFS_ACCESS_KEY=$ACCESS"
	echo "SWFS_SECRET_KEY=$SECRET"
	echo "SWFS_BUCKETS=$(for ((i = 0; i < NVOL; i++)); do printf '%s%d ' "$BUCKET" "$i"; done | sed 's/ $//')"
	echo "SWFS_VOLUME_PIDS=$(for ((i = 0; i < NVOL; i++)); do printf '%s ' "$(cat "$DIR/pids/volume$i" 2>/dev/null || echo -)"; done | sed 's/ $//')"
}

cmd_stop() {
	load
	local pids=()
	for f in "$DIR"/pids/*; do
		[[ -f "$f" ]] && pids+=("$(cat "$f")")
	done
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for ((n = 0; n < 50; n++)); do
		local left=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
		[[ $left == 0 ]] && break
		sleep 0.2
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	if [[ -z "${SWFS_KEEP:-}" ]]; then
		rm -rf "$DIR"
		[[ -f "$STATE" && "$(cat "$STATE")" == "$DIR" ]] && rm -f "$STATE"
		log "stopped, removed $DIR"
	else
		log "stopped, kept $DIR"
	fi
}

cmd_kill_volume() {
	load
	local p
	p=$(cat "$DIR/pids/volume$1")
	kill -KILL "$p"
	log "SIGKILLed volume server $1 (pid $p)"
}

cmd_start_volume() {
	load
	if alive "volume$1"; then log "volume server $1 is running"; return; fi
	start_volume "$1"
	wait_http "http://127.0.0.1:$(volume_port "$1")/status" 60
	log "volume server $1 started (pid $(cat "$DIR/pids/volume$1"))"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
env) cmd_env ;;
kill-volume) cmd_kill_volume "${2:?volume index}" ;;
start-volume) cmd_start_volume "${2:?volume index}" ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
