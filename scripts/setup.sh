#!/usr/bin/env bash
# Installs everything pyvs needs on Debian 12, as root; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-pip clang llvm libbpf-dev libbpf1 linux-libc-dev bpftool
              iproute2 iptables ethtool arptables nftables curl wrk
              groff-base man-db systemd  # man pages and units checked by tests/packaging
              debootstrap systemd-container  # the .deb installed in a clean Debian 12 root and booted (test_deb_install.py)
              chromium  # chromium: the status page's browser test (tests/lab/test_status_page.py)
              bird2  # BGP: the speaker `pyvs director run` drives for [bgp], and the ECMP lab's router
              keepalived)  # VRRP: the active/backup lab's directors (`pyvs lab up --vrrp`, tests/lab/test_vrrp.py)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The commands on the PATH, as an installed ipvsadm would be.
for cmd in pyvs pyvsadm; do
  ln -sf "$PWD/.venv/bin/$cmd" "/usr/local/bin/$cmd"
done

# bpffs for the pinned maps (a fresh machine may have none mounted).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
