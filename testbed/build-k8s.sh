#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 from Debian's source
# package and cache them outside the repo. Reused when present.
#
#   CANARY_CACHE (default ~/.cache/canary-operator) holds:
#     k8s-v1.20.2/bin/{kube-apiserver,kube-controller-manager}
#
# Go 1.19 (Debian bookworm) runs the vendored modern-go/reflect2 v1.0.1 into a
# segfault at apiserver start; we swap in Debian's reflect2 1.0.2 sources.
set -euo pipefail

CACHE="${CANARY_CACHE:-$HOME/.cache/canary-operator}"
OUT="$CACHE/k8s-v1.20.2/bin"
SRC_ROOT="$CACHE/src"
BINS=(kube-apiserver kube-controller-manager)

say() { printf '[build-k8s] %s\n' "$*" >&2; }

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kube-controller-manager" ]]; then
  say "cached binaries found in $OUT"
  exit 0
fi

need_apt=()
command -v go >/dev/null || need_apt+=(golang-go)
command -v dpkg-source >/dev/null || need_apt+=(dpkg-dev)
[[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] || need_apt+=(golang-github-modern-go-reflect2-dev)
command -v make >/dev/null || need_apt+=(make)
command -v rsync >/dev/null || need_apt+=(rsync)
if ((${#need_apt[@]})); then
  say "installing build tools: ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null \
    || { say "ERROR: apt-get install ${need_apt[*]} failed (is apt reachable? run apt-get update)"; exit 1; }
fi

mkdir -p "$SRC_ROOT"
src=$(find "$SRC_ROOT" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -n1)
if [[ -z "$src" ]]; then
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    say "adding a deb-src entry for bookworm"
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
      sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources
    else
      echo 'deb-src http://deb.debian.org/debian bookworm main' > /etc/apt/sources.list.d/canary-deb-src.list
    fi
    apt-get update -qq || { say "ERROR: apt-get update failed"; exit 1; }
  fi
  say "fetching Debian source package kubernetes/bookworm"
  (cd "$SRC_ROOT" && apt-get source -qq kubernetes/bookworm >/dev/null 2>&1) \
    || { (cd "$SRC_ROOT" && apt-get update -qq && apt-get source -qq kubernetes/bookworm >/dev/null) \
         || { say "ERROR: apt-get source kubernetes/bookworm failed"; exit 1; }; }
  src=$(find "$SRC_ROOT" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -n1)
fi
say "source: $src"

say "replacing vendored modern-go/reflect2 1.0.1 with Debian's 1.0.2"
r2="$src/vendor/github.com/modern-go/reflect2"
rm -rf "$r2"; mkdir -p "$r2"
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2/"

cd "$src"
export GOPATH="$src/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor
export GOCACHE="$CACHE/gocache"
mkdir -p .go/src/k8s.io
[[ -L .go/src/k8s.io/kubernetes ]] || ln -s ../../.. .go/src/k8s.io/kubernetes

say "building ${BINS[*]} with $(go version | cut -d' ' -f3) (cold build: about 9 minutes on 2 cores)"
start=$(date +%s)
( while sleep 30; do say "... still compiling ($(( $(date +%s) - start ))s)"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT
env HOME="${HOME:-/root}" make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$CACHE/build.log" 2>&1 \
  || { say "ERROR: build failed, last lines of $CACHE/build.log:"; tail -n 30 "$CACHE/build.log" >&2; exit 1; }
kill $ticker 2>/dev/null || true

mkdir -p "$OUT"
for b in "${BINS[@]}"; do install -m 0755 "_output/bin/$b" "$OUT/$b"; done
say "built in $(( $(date +%s) - start ))s -> $OUT"
