"""Put the helper (and so every run it forks) in its own namespaces, once, and say which layers hold.

Layers, each true only where the OS allowed it:
- `network_namespace`: a fresh network namespace; it has only a loopback device, and it is down.
- `mount_namespace`: the helper's own mount namespace; the host never sees what runs write.
- `minimal_root`: runs see only the minimal root of `sandbox_rootfs` (the interpreter, its standard
  library, the offered packages, the DSL files, a few /dev nodes and a private /tmp). Without it,
  the wider fallback view: the host's tree made read-only, with /tmp, /var/tmp, /dev/shm and
  /run/lock replaced by fresh tmpfs that only root (or a rootless helper) may write, /dev holding
  only the nodes the minimal root has, an empty /proc, and the `hide` paths covered.
- `unprivileged_user`: runs drop to uid/gid 65534 (needs the helper to be root).
- `seccomp`: runs install the filter of `sandbox_seccomp` (x86_64).
- `rlimits`: CPU, memory, file-size, open-file and process limits (always).
A non-root helper gets its namespaces from a user namespace that maps only its own uid and gid,
and gives up every capability in it once the root is built. Part of the helper: imports nothing
from the project.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterable

import sandbox_rootfs as rootfs
import sandbox_seccomp as seccomp

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER, CLONE_NEWIPC = 0x00020000, 0x40000000, 0x10000000, 0x08000000
_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_CAPSET = {"x86_64": 126, "aarch64": 91}
_MOUNT_SETATTR, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = 442, 0x8000, 0x1  # the same number on every architecture
_SCRATCH: list[str] = []  # the tmpfs this helper made that its runs may write to (the minimal root's /tmp, or _WRITABLE)
_libc = ctypes.CDLL(None, use_errno=True)


def _user_namespace() -> bool:
    """unshare a user, network and mount namespace mapping only our own ids; False if refused."""
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS) != 0:
        return False
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return True


def _drop_capabilities() -> None:
    """Give up every capability (those a user namespace granted): runs then inherit none."""
    nr = _CAPSET.get(platform.machine())
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    if nr is None or _libc.syscall(nr, header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset refused")


def _read_only_tree() -> None:
    """Make every mount of this (private) namespace read-only: mount_setattr(2) on / with AT_RECURSIVE
    (Linux 5.12+), else a read-only bind remount of each mount point (keeping the flags a user namespace
    locks). Raises OSError when a mount stays writable."""
    attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clear, propagation, userns
    if _libc.syscall(_MOUNT_SETATTR, -100, b"/", _AT_RECURSIVE, attr, ctypes.sizeof(attr)) == 0:  # AT_FDCWD
        return
    with open("/proc/self/mountinfo") as info:
        targets = [line.split()[4].encode().decode("unicode_escape") for line in info]
    for target in targets:
        flags = sum(ms for st, ms in rootfs._LOCKED if os.statvfs(target).f_flag & st)
        rootfs.mount(None, target, None, rootfs.MS_REMOUNT | rootfs.MS_BIND | rootfs.MS_RDONLY | flags)


def _minimal_dev() -> None:
    """Put a read-only tmpfs on /dev holding only `DEV_NODES` (the host's, bound) and a mount point for
    /dev/shm: the host's /dev holds the operator's terminal (/dev/tty, and a rootless user's /dev/pts/N),
    which a run could write to or type into. Call while /proc is the host's. Raises OSError."""
    fds = [(n, os.open(f"/dev/{n}", os.O_PATH | os.O_CLOEXEC)) for n in rootfs.DEV_NODES if os.path.exists(f"/dev/{n}")]
    try:
        shm = os.path.isdir("/dev/shm") and not os.path.islink("/dev/shm")
        rootfs.mount("tmpfs", "/dev", "tmpfs", rootfs.MS_NOSUID, "mode=0755,size=64k,nr_inodes=64")
        for name, fd in fds:
            os.close(os.open(f"/dev/{name}", os.O_WRONLY | os.O_CREAT, 0o644))
            rootfs.mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, rootfs.MS_BIND)
        if shm:
            os.mkdir("/dev/shm", 0o755)
        rootfs.mount(None, "/dev", None, rootfs.MS_REMOUNT | rootfs.MS_RDONLY | rootfs.MS_NOSUID)
    finally:
        for _, fd in fds:
            os.close(fd)


def _wide_view(hide: Iterable[str]) -> bool:
    """The fallback view: the host's tree read-only (a run may own files there: a rootless helper's runs
    keep its user, whose home, caches and interpreter they could otherwise rewrite), fresh tmpfs on the
    world-writable places (only root may write there, or a rootless helper and its runs), `hide`
    covered, and an empty /proc: there, a run of a rootless helper (its user's, and dumpable) could open
    the spawner's, the worker's or another run's /proc/PID/mem for writing, and it sees every process
    of the host; /dev holds only the harmless nodes (`_minimal_dev`). Whether all of it holds; `_SCRATCH`
    gets the tmpfs it made."""
    ok = True
    for step in (_read_only_tree, _minimal_dev):
        try:
            step()
        except OSError:
            ok = False
    for d in _WRITABLE:
        if os.path.isdir(d) and not os.path.islink(d):
            try:
                rootfs.mount("tmpfs", d, "tmpfs", rootfs.MS_NOSUID | rootfs.MS_NODEV, rootfs.TMP_OPTIONS)
                _SCRATCH.append(d)
            except OSError:
                ok = False
    try:
        rootfs.mount("tmpfs", "/proc", "tmpfs", rootfs.MS_RDONLY | rootfs.MS_NOSUID | rootfs.MS_NODEV, "mode=0555,size=4k")
    except OSError:
        ok = False
    for path in hide:
        try:
            if os.path.isdir(path):
                rootfs.mount("tmpfs", path, "tmpfs", rootfs.MS_RDONLY, "mode=0000,size=4k")
            elif os.path.isfile(path):
                rootfs.mount("/dev/null", path, None, rootfs.MS_BIND)
        except OSError:
            ok = False
    return ok


def isolate(packages: Iterable[str], files: Iterable[str], hide: Iterable[str],
            minimal: bool = True) -> tuple[dict[str, bool], dict[str, str]]:
    """Isolate this process; return the layers (name -> active) and why each missing one is missing.

    `packages` are the imported top-level modules runs may import beside the standard library,
    `files` the other files they may read (the DSL modules), `hide` what the fallback view covers;
    `minimal=False` asks for the fallback view even where the minimal root could be built.
    """
    layers = {"network_namespace": False, "mount_namespace": False, "minimal_root": False,
              "seccomp": seccomp.available(), "unprivileged_user": False, "rlimits": True}
    why: dict[str, str] = {}
    if not layers["seccomp"]:
        why["seccomp"] = f"no filter for {platform.machine()}"
    plan = None
    if not minimal:
        why["minimal_root"] = "turned off by the executor"
    else:
        try:
            plan = rootfs.plan(packages, files)
        except OSError as exc:
            why["minimal_root"] = f"cannot plan it: {exc}"
    root = os.geteuid() == 0
    if root:
        mountns = _libc.unshare(CLONE_NEWNET | CLONE_NEWNS) == 0
        layers["network_namespace"] = mountns
        layers["unprivileged_user"] = True
    else:
        mountns = _user_namespace()
        layers["network_namespace"] = mountns or _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
        why["unprivileged_user"] = "the helper is not root, so runs keep its user"
    _libc.unshare(CLONE_NEWIPC)  # System V and POSIX IPC of its own where the OS allows (the filter denies them too)
    if not mountns:
        why.setdefault("minimal_root", "the OS refused a mount namespace")
        why["mount_namespace"] = "the OS refused a mount namespace"
        return layers, why
    try:
        rootfs.mount(None, "/", None, rootfs.MS_REC | rootfs.MS_PRIVATE)
    except OSError as exc:
        why["mount_namespace"] = why["minimal_root"] = str(exc)
        return layers, why
    if plan is not None:
        try:
            plan.build()
            layers["minimal_root"] = layers["mount_namespace"] = True
            _SCRATCH.append("/tmp")
        except OSError as exc:
            why["minimal_root"] = str(exc)
    if not layers["minimal_root"]:
        layers["mount_namespace"] = _wide_view(hide)
        if not layers["mount_namespace"]:
            why["mount_namespace"] = "the OS refused a mount"
    if not root:
        try:
            _drop_capabilities()
        except OSError as exc:
            print(f"arcsynth sandbox: {exc}", file=sys.stderr, flush=True)
    return layers, why


def scratch(layers: dict[str, bool]) -> list[str]:
    """The tmpfs this helper made that its runs own too, for `sandbox_scratch` to tidy after each run: a
    rootless helper's (whose runs keep its user); none for a root helper (its runs are 65534)."""
    return [] if layers["unprivileged_user"] or not layers["mount_namespace"] else list(_SCRATCH)
