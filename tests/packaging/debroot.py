"""A clean Debian 12 root for the .deb's install tests: debootstrapped once and cached, then used through an overlay,
so that every test starts from the same clean root and the cache is never written.

The cache ($PYVS_TEST_CACHE, default /var/cache/pyvs-tests):
  debian-bookworm-<key>/  the debootstrap root: minbase and systemd-sysv (so that systemd-nspawn can boot it), none
                          of pyvs's dependencies. The key hashes the suite, variant, packages and mirror; the root is
                          built beside it under a lock and renamed into place when complete. Delete it to rebuild.
  apt-archives/           the .debs apt fetched for pyvs's dependencies (the root's /var/cache/apt/archives):
                          downloaded once. When the mirror has moved on and a .deb is gone, apt-get update runs first.

Each session (debootstrap, or a test's script) runs in new mount and PID namespaces (`unshare`): every mount it makes
(the overlay, /proc, /sys, a bpffs, /dev, /run) and every process it starts go with it, also when a test fails, times
out or is killed.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
INCLUDE = ("systemd-sysv",)
MIRROR = os.environ.get("PYVS_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("PYVS_TEST_CACHE", "/var/cache/pyvs-tests"))
DEBOOTSTRAP_TIMEOUT = 900
# Killed, unshare kills its PID namespace's init (--kill-child), and with it every process of the namespace.
UNSHARE = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--kill-child"]

# The overlay of the cached root on $state/root, the apt cache, the .deb in /tmp, DNS for apt, /etc/hosts; then the
# caller's script. Arguments: the cached root, a state directory, the .deb, the apt cache, then the caller's.
MOUNT_ROOT = r"""
set -euo pipefail
base=$1 state=$2 deb=$3 archives=$4
shift 4
root=$state/root
mkdir -p "$state/upper" "$state/work" "$root" "$archives"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$state/upper,workdir=$state/work" "$root"
mount --bind "$archives" "$root/var/cache/apt/archives"
install -m 644 "$deb" "$root/tmp/pyvs.deb"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# As Debian's installer writes it (debootstrap writes none): without it, the host name is looked up in DNS, and a
# lab web server (HTTPServer.server_bind calls getfqdn) waits 5 s for that in a namespace where DNS is unreachable.
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$(hostname)" >"$root/etc/hosts"
api_fs() {  # what apt and the lab need in a chroot
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount -t bpf bpf "$root/sys/fs/bpf"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/run"
}
in_root() {  # a clean environment: nothing of the host's PATH, venv or PYTHONPATH
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"
}
apt_install() {  # apt installs the .deb and resolves its dependencies; options (--no-install-recommends) in "$@"
  in_root apt-get install -y -q "$@" /tmp/pyvs.deb ||
    { in_root apt-get update -q && in_root apt-get install -y -q "$@" /tmp/pyvs.deb; }
  in_root apt-get check -q
}
"""


def cache_key() -> str:
    return hashlib.sha256(f"{SUITE} {VARIANT} {','.join(INCLUDE)} {MIRROR}".encode()).hexdigest()[:12]


def cached_root() -> Path:
    """The cached debootstrap root, built when missing (debootstrap needs the mirror; ~30 s here)."""
    root = CACHE / f"debian-{SUITE}-{cache_key()}"
    if root.is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it
        if root.is_dir():
            return root
        building = CACHE / f".{root.name}.{os.getpid()}"
        log = CACHE / f"{root.name}.log"
        try:
            # A debootstrap stopped half-way (the timeout) leaves no process running and no /proc mounted in the tree.
            script = (f"debootstrap --variant={VARIANT} --include={','.join(INCLUDE)} {SUITE} {building} {MIRROR} "
                      f"&& chroot {building} apt-get clean")
            with open(log, "w") as out:
                result = subprocess.run([*UNSHARE, "sh", "-c", script],
                                        stdout=out, stderr=subprocess.STDOUT, timeout=DEBOOTSTRAP_TIMEOUT,
                                        preexec_fn=die_with_parent)
            assert result.returncode == 0, f"debootstrap failed, see {log}:\n{log.read_text()[-3000:]}"
            building.rename(root)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
    return root


def archives() -> Path:
    return CACHE / "apt-archives"


def die_with_parent() -> None:
    """preexec_fn: SIGKILL (unshare --fork ignores SIGTERM) when the test process dies, even killed itself, so that
    no session outlives it."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def session_argv(script: str, state: Path, deb: Path, *args: str) -> list[str]:
    """argv of a session that mounts the root on `state`/root and runs `script` (bash, after MOUNT_ROOT: api_fs,
    in_root and apt_install are defined; `args` are its "$@"). No process it starts (a lab's servers, a booted
    machine) outlives it."""
    return [*UNSHARE, "bash", "-c", MOUNT_ROOT + script,
            "pyvs-debroot", str(cached_root()), str(state), str(deb), str(archives()), *args]
