#!/usr/bin/env bash
# Builds the test cluster's binaries (kube-apiserver, kubectl, etcd, kwok) from the Go wrapper modules
# next to this script into a per-version cache dir, once per machine. Prints that dir on the last line.
#
#   tests/cluster/build.sh              build what is missing, print the bin dir
#   tests/cluster/build.sh NAME…        build only these (kube-apiserver kubectl etcd kwok) if missing
#   tests/cluster/build.sh --dir        print the bin dir only (no build)
#
# Exit codes: 0 built (or already cached), 2 Go is not installed, 3 a go build failed, 64 bad usage.
# The cache key is the pinned versions, so clean clones and CI on the same machine reuse one build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=1.36.3
ETCD_VERSION=3.6.16
KWOK_VERSION=0.8.0
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/tower
bin_dir=$cache_root/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION-kwok-v$KWOK_VERSION/bin

if [ "${1:-}" = "--dir" ]; then
  echo "$bin_dir"
  exit 0
fi

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(kube-apiserver kubectl etcd kwok)
for b in "${wanted[@]}"; do
  case $b in
    kube-apiserver | kubectl | etcd | kwok) ;;
    *)
      echo "build.sh: unknown binary '$b' (expected kube-apiserver, kubectl, etcd or kwok)" >&2
      exit 64
      ;;
  esac
done
want() { # name → true if it was asked for and is not cached yet
  local b
  [ -x "$bin_dir/$1" ] && return 1
  for b in "${wanted[@]}"; do [ "$b" = "$1" ] && return 0; done
  return 1
}
stages_missing() { [ ! -f "$bin_dir/kwok-stage/pod/fast/pod-ready.yaml" ]; }
if ! want kube-apiserver && ! want kubectl && ! want etcd && ! want kwok && ! stages_missing; then
  echo "$bin_dir"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if ! want kube-apiserver && ! want kubectl && ! want etcd && ! want kwok; then
    # Only the stage YAML copy is missing: the harness can still read it from a Go module cache.
    echo "$bin_dir"
    exit 0
  fi
  cat >&2 <<MSG
tower test cluster: the binaries are not in $bin_dir and Go is not installed.
Install Go >= 1.26 (https://go.dev/dl, or put it at /usr/local/go/bin) so they can be built once,
or point TOWER_K8S_BIN (or KUBEBUILDER_ASSETS) at a dir holding kube-apiserver, etcd, kubectl and kwok.
MSG
  exit 2
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -mod=mod"
mkdir -p "$bin_dir"
tmp_out=$(mktemp -d "$cache_root/build.XXXXXX")
start=$(date +%s)
step() { echo "[tower cluster build +$(($(date +%s) - start))s] $*" >&2; }

# Heartbeat so a long first build is visibly alive.
(while sleep 30; do step "still building…"; done) &
beat=$!
trap 'kill $beat 2>/dev/null; rm -rf "$tmp_out"' EXIT

# Moves finished binaries into the cache one by one (a rename on one filesystem), so a failed or
# interrupted later build keeps the earlier ones and never leaves a half-written binary cached.
publish() {
  local f
  for f in "$@"; do mv -f "$tmp_out/$f" "$bin_dir/$f"; done
}

go_build() { # what, module dir, ldflags, packages…
  local what=$1 dir=$2 ldflags=$3
  shift 3
  if ! (cd "$here/gomod/$dir" && go build -ldflags "$ldflags" -o "$tmp_out/" "$@"); then
    step "go build of $what failed (module tests/cluster/gomod/$dir)"
    exit 3
  fi
}

if want etcd; then
  step "building etcd v$ETCD_VERSION (Go $(go env GOVERSION), a one-time cost)"
  go_build etcd etcd "-s -w" go.etcd.io/etcd/server/v3
  # go build names the binary after the last path element that is not a major version: "server".
  mv "$tmp_out/server" "$tmp_out/etcd"
  publish etcd
  step "built etcd"
fi
if want kwok; then
  step "building kwok v$KWOK_VERSION (a one-time cost)"
  go_build kwok kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
  publish kwok
  step "built kwok"
fi
k8s_bins=()
want kube-apiserver && k8s_bins+=(kube-apiserver)
want kubectl && k8s_bins+=(kubectl)
if [ ${#k8s_bins[@]} -gt 0 ]; then
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  k8s_ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  step "building ${k8s_bins[*]} v$K8S_VERSION (about 4 min on 2 cores the first time)"
  go_build "${k8s_bins[*]}" k8s "$k8s_ldflags" "${k8s_bins[@]/#/k8s.io/kubernetes/cmd/}"
  publish "${k8s_bins[@]}"
  step "built ${k8s_bins[*]}"
fi
# kwok's stage YAML (how fake pods move through their phases) comes with its module; kept next to the
# binaries so a cluster starts with no Go and no module cache (and TOWER_K8S_BIN dirs can carry it too).
if stages_missing; then
  (cd "$here/gomod/kwok" && go mod download "sigs.k8s.io/kwok@v$KWOK_VERSION")
  rm -rf "$tmp_out/kwok-stage"
  cp -R "$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage" "$tmp_out/kwok-stage"
  chmod -R u+w "$tmp_out/kwok-stage"
  rm -rf "$bin_dir/kwok-stage"
  mv "$tmp_out/kwok-stage" "$bin_dir/kwok-stage"
  step "kept kwok's stage YAML in $bin_dir/kwok-stage"
fi
step "done in $(($(date +%s) - start))s"
echo "$bin_dir"
