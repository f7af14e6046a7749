#!/usr/bin/env bash
# Installs corral and everything it needs on Debian 12, as root, into ./.venv.
#   scripts/setup.sh          what running containers needs
#   scripts/setup.sh --test   also what the test suite needs (the [test] extra, which
#                             includes corral[dask]: Dask's distributed, for tests/test_dask.py)
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(busybox-static libseccomp2 libnftables1 procps python3 python3-venv python3-dev gcc libc6-dev util-linux)
if [[ "${1:-}" == "--test" ]]; then
  # runc and crun to compare with (and bubblewrap, in bench/run's batches); podman (conmon,
  # containers-common) and containerd to drive corral; CNI plugins for the CRI tests' pod
  # network; systemd and dbus, booted in a container for the systemd cgroup driver's test.
  packages+=(runc crun bubblewrap podman containerd containernetworking-plugins systemd dbus)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own interpreter: the one python3-dev and python3-venv belong to.
python=/usr/bin/python3
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
extra=""
[[ "${1:-}" == "--test" ]] && extra="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extra}"
# Byte-compile now: each `corral` call is a new interpreter, and hosts may set
# PYTHONDONTWRITEBYTECODE, which would make every call compile corral again.
.venv/bin/python -m compileall -q corral
