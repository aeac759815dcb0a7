#!/usr/bin/env bash
# Put/Get throughput of sealkv through s3store to a SeaweedFS cluster on
# 127.0.0.1, next to the default local Pebble slice store and s3store over
# in-process gofakes3 (s3store/bench_test.go, BenchmarkKV).
#
#   scripts/seaweedfs/bench.sh              # 256 MiB, 3 iterations
#   SEALKV_BENCH_MB=1024 COUNT=1 scripts/seaweedfs/bench.sh
#
# Builds weed first if it is not cached (build.sh); the benchmark starts and
# stops its own cluster (cluster.sh) in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/seaweedfs/build.sh >/dev/null
SEALKV_SEAWEEDFS=1 SEALKV_BENCH_MB="${SEALKV_BENCH_MB:-256}" \
	go test -run '^$' -bench KV -benchtime "${COUNT:-3}x" -timeout 60m ./s3store
