#!/usr/bin/env bash
# Installs what the benchmarks need beyond pyvs itself (scripts/setup.sh), as root; safe to run again.
#   haproxy, nginx (stream module), wrk: the proxies and the HTTP load generator of `python -m benchmarks proxies`
#   matplotlib: the PNG of `python -m benchmarks plot`
# The packages' own services are not started: the benchmarks start them in the lab's namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(haproxy nginx-light libnginx-mod-stream wrk)
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "benchmarks setup: installing ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [ ! -e "$policy" ]; then  # keep the packages' init scripts from starting daemons in the root namespace
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; added_policy=1
  fi
  trap '[ "$added_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

"$PYTHON" -c 'import matplotlib' 2>/dev/null || "$PYTHON" -m pip install -q --disable-pip-version-check matplotlib
echo "benchmarks setup: haproxy $(haproxy -v | head -1 | awk '{print $3}'), nginx $(nginx -v 2>&1 | cut -d/ -f2), wrk, matplotlib ready"
