#!/usr/bin/env bash
# Builds the Go-made test tools (the test cluster's kube-apiserver, kubectl, etcd and kwok, and any tool in
# GO_TOOLS below) from the wrapper modules in tests/cluster/gomod/ into one per-machine cache dir, once.
# Progress (one line per tool, with elapsed time, or one "cached" line) goes to stderr; the cache dir is
# printed on the last line of stdout.
#
#   tests/cluster/build.sh              build what is missing, print the bin dir
#   tests/cluster/build.sh NAME…        build only these tools if missing
#   tests/cluster/build.sh --dir        print the bin dir only (no build)
#   tests/cluster/build.sh --list       print the tool names, one a line
#
# Exit codes: 0 built (or already cached), 2 Go is not installed, 3 a go build failed, 64 bad usage.
# The dir is keyed by the cluster's pinned versions, so clean clones and CI on one machine reuse one build;
# every tool also has a stamp of its wrapper module there, so bumping a version in a go.mod rebuilds it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=1.36.3
ETCD_VERSION=3.6.16
KWOK_VERSION=0.8.0
k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
  k8s_ldflags+=" -X $p.gitTreeState=clean"
done

# The Go-built test tools, one a line: binary name | wrapper module dir under gomod/ | package | ldflags.
# To add one: a wrapper module gomod/<dir>/ (go.mod with a `tool` directive pinning it, and go.sum) and a line.
GO_TOOLS=(
  "etcd           | etcd | go.etcd.io/etcd/server/v3            | -s -w"
  "kwok           | kwok | sigs.k8s.io/kwok/cmd/kwok            | -s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION"
  "kube-apiserver | k8s  | k8s.io/kubernetes/cmd/kube-apiserver | $k8s_ldflags"
  "kubectl        | k8s  | k8s.io/kubernetes/cmd/kubectl        | $k8s_ldflags"
  "oidc-provider  | oidc-provider | . | -s -w"  # zitadel/oidc's example OP, wrapped (single sign-on tests)
  "helm           | helm | helm.sh/helm/v3/cmd/helm             | -s -w -X helm.sh/helm/v3/internal/version.version=v3.22.0"  # chart tests
  "promtool       | promtool | github.com/prometheus/prometheus/cmd/promtool | -s -w"
)

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/tower
bin_dir=$cache_root/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION-kwok-v$KWOK_VERSION/bin

trim() { # $1 without leading and trailing spaces, in REPLY (no subprocess: this runs on every test run)
  REPLY=${1#"${1%%[![:space:]]*}"}
  REPLY=${REPLY%"${REPLY##*[![:space:]]}"}
}
parse() { # a GO_TOOLS line → t_name, t_dir, t_pkg, t_ldflags
  local a b c d
  IFS='|' read -r a b c d <<<"$1"
  trim "$a" && t_name=$REPLY
  trim "$b" && t_dir=$REPLY
  trim "$c" && t_pkg=$REPLY
  trim "$d" && t_ldflags=$REPLY
}
all_names=()
for line in "${GO_TOOLS[@]}"; do
  parse "$line"
  all_names+=("$t_name")
done
listed() { # name, list… → true if name is in the list
  local n=$1 x
  shift
  for x in "$@"; do [ "$x" = "$n" ] && return 0; done
  return 1
}

case "${1:-}" in
  --dir)
    echo "$bin_dir"
    exit 0
    ;;
  --list)
    printf '%s\n' "${all_names[@]}"
    exit 0
    ;;
esac

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=("${all_names[@]}")
for b in "${wanted[@]}"; do
  if ! listed "$b" "${all_names[@]}"; then
    echo "build.sh: unknown tool '$b' (expected one of: ${all_names[*]})" >&2
    exit 64
  fi
done

# A tool's stamp: its wrapper module's go.mod and go.sum, package and ldflags. A cached binary with another
# stamp is rebuilt; one with no stamp (built before stamps existed) is adopted as it is.
stamp_of() { # (after parse) → the stamp of t_name
  { cat "$here/gomod/$t_dir/go.mod" "$here/gomod/$t_dir/go.sum"; echo "$t_pkg $t_ldflags"; } |
    sha256sum | cut -c1-16
}
is_cached() { # (after parse) → true if t_name is in the cache and built from the current wrapper module
  local stamp_file=$bin_dir/.stamps/$t_name stamp
  [ -x "$bin_dir/$t_name" ] || return 1
  stamp=$(stamp_of)
  if [ ! -f "$stamp_file" ]; then
    mkdir -p "$bin_dir/.stamps" && echo "$stamp" >"$stamp_file"
  fi
  [ "$(<"$stamp_file")" = "$stamp" ]
}
todo=()
for line in "${GO_TOOLS[@]}"; do
  parse "$line"
  listed "$t_name" "${wanted[@]}" || continue
  is_cached || todo+=("$line")
done
stages_missing() { [ ! -f "$bin_dir/kwok-stage/pod/fast/pod-ready.yaml" ]; }

if [ ${#todo[@]} -eq 0 ] && ! stages_missing; then
  echo "[tower go tools] cached: ${wanted[*]} (in $bin_dir)" >&2
  echo "$bin_dir"
  exit 0
fi

# Go's own install place counts even when it is not on PATH (a fresh shell after unpacking Go's tarball).
command -v go >/dev/null 2>&1 || [ ! -x /usr/local/go/bin/go ] || PATH=$PATH:/usr/local/go/bin
if ! command -v go >/dev/null 2>&1; then
  if [ ${#todo[@]} -eq 0 ]; then
    # Only the stage YAML copy is missing: the harness can still read it from a Go module cache.
    echo "$bin_dir"
    exit 0
  fi
  missing=()
  for line in "${todo[@]}"; do
    parse "$line"
    missing+=("$t_name")
  done
  cat >&2 <<MSG
tower test tools: ${missing[*]} not in $bin_dir and Go is not installed.
Install Go >= 1.26 (https://go.dev/dl, or put it at /usr/local/go/bin) so they can be built once,
or point TOWER_K8S_BIN (or KUBEBUILDER_ASSETS) at a dir holding kube-apiserver, etcd, kubectl and kwok.
MSG
  exit 2
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -mod=mod"
mkdir -p "$bin_dir/.stamps"
# One build at a time per machine: a second caller waits, then finds the tools cached.
exec 9>"$cache_root/build.lock"
if ! flock -n 9; then
  echo "[tower go tools] another build is running; waiting for it" >&2
  flock 9
  exec "$0" "$@"
fi
tmp_out=$(mktemp -d "$cache_root/build.XXXXXX")
start=$(date +%s)
step() { echo "[tower go tools +$(($(date +%s) - start))s] $*" >&2; }

# Heartbeat so a long first build is visibly alive.
(while sleep 30; do step "still building…"; done) 9>&- &
beat=$!
trap 'kill $beat 2>/dev/null; rm -rf "$tmp_out"' EXIT

# Each finished binary is moved into the cache at once (a rename on one filesystem), so a failed or
# interrupted later build keeps the earlier ones and never leaves a half-written binary cached.
n=0
for line in "${todo[@]}"; do
  n=$((n + 1))
  parse "$line"
  t0=$(date +%s)
  step "building $t_name ($n/${#todo[@]}, Go $(go env GOVERSION), module tests/cluster/gomod/$t_dir; a one-time cost)"
  if ! (cd "$here/gomod/$t_dir" && go build -ldflags "$t_ldflags" -o "$tmp_out/$t_name" "$t_pkg"); then
    step "go build of $t_name failed (module tests/cluster/gomod/$t_dir)"
    exit 3
  fi
  mv -f "$tmp_out/$t_name" "$bin_dir/$t_name"
  stamp_of >"$bin_dir/.stamps/$t_name"
  step "built $t_name in $(($(date +%s) - t0))s"
done
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
