#!/usr/bin/env bash
# Everything the tests need on a fresh Debian machine, done before any test runs (`deno task test` runs
# this first, as root): the Debian packages below (installed with apt-get; without apt-get, one message
# says what to install) and the Go-built test tools (tests/cluster/build.sh, built once per machine into
# ~/.cache/tower). One progress line a step on stderr. Safe to run again: what is there is only checked.
# npm packages (deno.json's imports) are fetched by `deno test` itself, before any test starts.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run, as "command package": the command tells whether the package is there.
# To add one: a line here (and nothing else; CI and a newcomer both come through this script).
DEBIAN_PACKAGES=(
  "ip iproute2"             # the test clusters' network namespaces
  "openssl openssl"         # the test PKI
  "ssh-keygen openssh-client"
  "script bsdutils"         # a pseudo-terminal for kubectl exec -t
  "flock util-linux"        # one Go build at a time (tests/cluster/build.sh)
  "curl curl"               # a real HTTP client
  "tinyproxy tinyproxy"     # a real HTTP CONNECT proxy between agent and hub
  "socat socat"             # real TCP and UDP servers inside a cluster
  "dig dnsutils"            # DNS queries to LoadBalancer names
  "dnsmasq dnsmasq-base"    # a real DNS server
  "haproxy haproxy"         # a load balancer in front of several hubs (HA tests)
  "chromium chromium"       # the status page test's browser (driven by npm:playwright-core)
)

start=$(date +%s)
step() { echo "[tower setup +$(($(date +%s) - start))s] $*" >&2; }

# 1. Debian packages. Commands in sbin dirs count even when PATH (a non-root user's) lacks them.
missing=()
for entry in "${DEBIAN_PACKAGES[@]}"; do
  read -r cmd pkg <<<"$entry"
  PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
install_hint="sudo apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "tower tests: 'deno task test' must run as root (the test clusters live in network namespaces):" \
    "run it with sudo${missing[*]:+ (it then installs ${missing[*]} with apt-get, or do it first: $install_hint)}," \
    "or run 'deno task test:unit' for the tests that need no root." >&2
  exit 1
fi
if [ ${#missing[@]} -eq 0 ]; then
  step "Debian packages: all ${#DEBIAN_PACKAGES[@]} installed"
elif command -v apt-get >/dev/null 2>&1; then
  step "Debian packages: installing ${missing[*]} (apt-get, a one-time cost)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # One line a package as dpkg sets it up, so a long install (chromium) is visibly alive.
  apt-get install -y -q --no-install-recommends "${missing[@]}" | { grep --line-buffered '^Setting up' || true; }
  step "Debian packages: installed ${missing[*]}"
else
  echo "tower tests need these Debian packages, which are not installed: ${missing[*]}." \
    "Install them with: $install_hint" \
    "(on Debian, the tests install them themselves)." >&2
  exit 1
fi

# 2. Go-built test tools: the cluster binaries and the tools listed in tests/cluster/build.sh, except the
#    cluster binaries given by TOWER_K8S_BIN or KUBEBUILDER_ASSETS (see tests/cluster/bins.ts).
given=" "
[ -z "${TOWER_K8S_BIN:-}" ] || given+="kube-apiserver kubectl etcd kwok "
[ -z "${KUBEBUILDER_ASSETS:-}" ] || given+="kube-apiserver kubectl etcd "
tools=()
for t in $(tests/cluster/build.sh --list); do [[ $given == *" $t "* ]] || tools+=("$t"); done
if [ ${#tools[@]} -gt 0 ]; then
  step "Go-built test tools: ${tools[*]} (tests/cluster/build.sh: a line per tool built, or one 'cached' line)"
  tests/cluster/build.sh "${tools[@]}" >/dev/null
fi

step "ready; the tests start now"
