#!/usr/bin/env bash
# Builds dist/pyvs_<version>_all.deb with dpkg-deb (no debhelper): the Python package with its BPF objects
# compiled in (as the wheel) and the pyroute2 it is tested with, both in /usr/lib/pyvs (private modules: Debian 12's
# python3-pyroute2 0.7.2 cannot serve pyvs), pyvs and pyvsadm in /usr/sbin, the systemd units, a default
# /etc/pyvs/director.toml, the man pages and the bash completions. Needs clang (at build time only), python3 with
# `build` and pyroute2 (the build Python's copy is the one shipped), dpkg-deb.
# tests/packaging/test_deb_install.py installs it with apt in a clean Debian 12 root and boots that root.
#
#   bash scripts/build-deb.sh [OUTDIR]        # default OUTDIR: dist
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(realpath -m "${1:-dist}")
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/pyvs_${VERSION}_all
mkdir -p "$OUT" "$STAGE/DEBIAN"

# The Python package, as the wheel carries it (BPF objects compiled by setup.py), into /usr/lib/pyvs.
"$PYTHON" -m build --wheel --outdir "$WORK/wheel" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
LIB=$STAGE/usr/lib/pyvs
mkdir -p "$LIB"
"$PYTHON" -m zipfile -e "$WORK"/wheel/pyvs-*.whl "$LIB"
rm -rf "$LIB"/pyvs-*.dist-info
ls "$LIB"/pyvs/dataplane/bpf/prebuilt/*/pyvs_xdp.o >/dev/null  # refuse a package without its objects

# pyroute2 beside it: Debian 12's python3-pyroute2 (0.7.2) reads no netlink attribute by name (msg.get("IFLA_..."),
# which pyvs uses throughout, returns None) and has no IPRoute(netns=...). pyroute2 is pure Python, no dependency.
read -r PR2_DIR PR2_VERSION < <("$PYTHON" -c 'import importlib.metadata as m, os, pyroute2
print(os.path.dirname(pyroute2.__file__), m.version("pyroute2"))')
case $PR2_VERSION in 0.[0-7].*) echo "build-deb: pyroute2 $PR2_VERSION: pyvs cannot use 0.7 or older" >&2; exit 1;; esac
cp -r "$PR2_DIR" "$LIB/pyroute2"
find "$LIB" -name __pycache__ -type d -prune -exec rm -rf {} +

# The commands, in /usr/sbin as ipvsadm's.
install -d "$STAGE/usr/sbin"
for cmd in pyvs:pyvs.cli pyvsadm:pyvs.admin.cli; do
  name=${cmd%%:*} module=${cmd#*:}
  printf '#!/usr/bin/python3\nimport sys\n\nsys.path.insert(0, "/usr/lib/pyvs")\nfrom %s import main\n\nsys.exit(main())\n' \
    "$module" >"$STAGE/usr/sbin/$name"
  chmod 755 "$STAGE/usr/sbin/$name"
done

install -D -m 644 contrib/pyvs-director.service "$STAGE/lib/systemd/system/pyvs-director.service"
install -D -m 644 contrib/pyvs-rules.service "$STAGE/lib/systemd/system/pyvs-rules.service"
install -D -m 644 contrib/director.toml "$STAGE/etc/pyvs/director.toml"
for page in contrib/man/*.[1-8]; do
  section=${page##*.}
  install -D -m 644 "$page" "$STAGE/usr/share/man/man$section/$(basename "$page")"
  gzip -9n "$STAGE/usr/share/man/man$section/$(basename "$page")"
done
for cmd in pyvs pyvsadm; do
  install -D -m 644 "contrib/completion/$cmd" "$STAGE/usr/share/bash-completion/completions/$cmd"
done
install -d "$STAGE/usr/share/doc/pyvs"
gzip -9nc README.md >"$STAGE/usr/share/doc/pyvs/README.md.gz"
gzip -9nc docs/DESIGN.md >"$STAGE/usr/share/doc/pyvs/DESIGN.md.gz"
"$PYTHON" - "$STAGE/usr/share/doc/pyvs/copyright" <<'COPYRIGHT'
import importlib.metadata as m, sys
dist = m.distribution("pyroute2")
texts = [(f.name, f.read_text()) for f in dist.files or () if "LICENSE" in f.name.upper()]
if not texts:
    sys.exit("build-deb: pyroute2's license texts not found")
with open(sys.argv[1], "w") as out:
    out.write(f"pyvs bundles pyroute2 {dist.version} (https://github.com/svinota/pyroute2) in /usr/lib/pyvs/pyroute2,\n"
              f"licensed {dist.metadata.get('License-Expression') or dist.metadata.get('License')}; its texts follow.\n")
    for name, text in texts:
        out.write(f"\n== {name}\n{text}")
COPYRIGHT

SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
# Architecture all: no native code; the BPF objects are little-endian (bpfel), for every little-endian port;
# elsewhere pyvs compiles them at run time (then clang and libbpf-dev are needed).
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: pyvs
Version: $VERSION
Section: net
Priority: optional
Architecture: all
Installed-Size: $SIZE
Depends: python3 (>= 3.11), python3-prometheus-client (>= 0.16), libbpf1
Recommends: ethtool, iptables, iproute2
Suggests: arptables, clang, libbpf-dev, bird2, keepalived
Maintainer: pyvs developers <pyvs@localhost>
Description: Linux Virtual Server for direct routing with an XDP data plane
 pyvs balances TCP and UDP services over real servers by direct routing, as
 LVS-DR does, with an XDP program instead of the kernel's IPVS. pyvsadm has
 ipvsadm's interface; the pyvs-director service health-checks the real
 servers from /etc/pyvs/director.toml; pyvs-rules restores /etc/pyvs/rules
 at boot. The BPF objects are shipped compiled: no compiler is needed.
CONTROL
echo /etc/pyvs/director.toml >"$STAGE/DEBIAN/conffiles"
cat >"$STAGE/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
# The units are not enabled: a director starts forwarding once its rules or config are written.
# Byte-compiled now: the daemon runs with /usr read-only (ProtectSystem=strict) and could not cache them.
python3 -m compileall -q /usr/lib/pyvs >/dev/null || true
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
POSTINST
cat >"$STAGE/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
POSTRM
cat >"$STAGE/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
# Stopping the daemon does not stop forwarding (the pinned maps stay); `pyvsadm -C` clears the table.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop pyvs-director.service >/dev/null 2>&1 || true
fi
find /usr/lib/pyvs -name __pycache__ -type d -exec rm -rf {} + 2>/dev/null || true
PRERM
chmod 755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/postrm" "$STAGE/DEBIAN/prerm"

DEB=$OUT/pyvs_${VERSION}_all.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
