#!/usr/bin/env bash
# Installs what canary-operator's testbed and tests need on Debian bookworm (as root):
# system packages, a virtualenv in .venv with the package and its test extras, and the
# Kubernetes v1.20.2 control-plane binaries (built once, cached in ~/.cache/canary-operator).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

pkgs=(etcd-server prometheus prometheus-alertmanager golang-go dpkg-dev golang-github-modern-go-reflect2-dev rsync make openssl
      ca-certificates python3-venv python3-pip tmux  # tmux: the live view is tested under a real terminal
      chromium chromium-driver)  # `canary dashboard` is tested in a real headless browser (selenium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || { say "ERROR: need root to install: ${missing[*]}"; exit 1; }
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || { say "ERROR: apt-get update failed: no access to Debian's package archive?"; exit 1; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { say "ERROR: apt-get install ${missing[*]} failed"; exit 1; }
fi
# the Debian prometheus package may start its own service on :9090 (systemd); ours uses 19090.

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
  say "installing canary-operator and its test dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -U pip >/dev/null
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

bash testbed/build-k8s.sh
say "ready"
