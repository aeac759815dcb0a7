#!/usr/bin/env bash
# Build the SeaweedFS `weed` binary from the Go module proxy, pinned, cached.
#
#   scripts/seaweedfs/build.sh          # prints the path of the binary
#
# `go install module@version` refuses seaweedfs because its go.mod has replace
# directives, so we download the module zip through the ordinary Go client,
# copy it to a writable tree and `go build ./weed` there.  A cold build takes
# ~9 min on a free 2-core machine and ~2.5 GB RAM; the binary is cached under
# $SEALKV_CACHE (default ~/.cache/sealkv) by version, so later calls are free.
#
# Env:
#   SEAWEEDFS_VERSION  module version (default: the pinned pseudo-version below)
#   SEALKV_CACHE       cache dir (default ~/.cache/sealkv)
#   GOFLAGS / GOMAXPROCS are honoured by the go build.
set -euo pipefail

VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${SEALKV_CACHE:-$HOME/.cache/sealkv}"
OUT="$CACHE/weed-$VERSION"
BIN="$OUT/weed"

if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
	echo "$BIN"
	exit 0
fi

mkdir -p "$OUT"
log() { echo "build.sh: $*" >&2; }

log "downloading github.com/seaweedfs/seaweedfs@$VERSION"
DIR=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z "$DIR" || ! -d "$DIR" ]]; then
	log "go mod download gave no module dir"
	exit 1
fi

SRC="$OUT/src"
rm -rf "$SRC"
log "copying $DIR -> $SRC"
cp -r "$DIR" "$SRC"
chmod -R u+w "$SRC"

log "go build ./weed (slow: several minutes, ~2.5 GB RAM)"
(cd "$SRC" && GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" go build -o "$BIN.tmp" ./weed)
mv "$BIN.tmp" "$BIN"
rm -rf "$SRC"
"$BIN" version >&2 || true
echo "$BIN"
