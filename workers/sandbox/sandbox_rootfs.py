"""The minimal root every run sees: built once, in the helper's own mount namespace, then pivoted into.

`/` is a fresh tmpfs, read-only once built, whose directories are 0755, so an unprivileged run
can walk to what it holds even where the host's directories are closed (a pyenv interpreter
under `/root`). It holds, each read-only (nosuid, nodev) at its own path:
- the standard library: the directory of `os`, that of the stdlib's extension modules, and
  every `sys.path` entry under the interpreter's base prefix that is not a site-packages folder;
- the folders of every shared library the helper has mapped (the interpreter's, libc's, those
  of numpy's wheel) and `/etc/ld.so.cache`, so an extension module imported later finds its
  libraries; the time-zone database, when there is one;
- the offered packages: each one's own folder (or file), its `<name>.libs` and its
  `<name>-*.dist-info`; every site-packages folder that a bind mount above would show is
  covered by an empty tmpfs first, so no other installed package is visible;
- the DSL module files, and `/dev/null`, `zero`, `full`, `random`, `urandom`;
- `/tmp`: an empty tmpfs, root-owned and 0755, where the helper makes each run's directory.
Symbolic links met on those paths (`/lib -> usr/lib`, a venv's `lib64`) are recreated. Nothing
else exists: no `/proc`, `/etc`, `/home`, `/run`, `/var`, `/dev/shm`, no project code, no run
directories. Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import ctypes
import os
import platform
import site
import sys
from collections.abc import Iterable

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
DEV_NODES = ("null", "zero", "full", "random", "urandom")
TMP_OPTIONS = "mode=0755,size=256m,nr_inodes=65536"
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
# statvfs flags a bind mount inherits and may not drop when remounted (in a user namespace).
_LOCKED = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
           (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
           (os.ST_RELATIME, MS_RELATIME))
_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2); raises OSError naming the target."""
    def enc(v: str | None) -> bytes | None:
        return v.encode() if v is not None else None
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class Root:
    """A plan of the minimal root (`add`), then its making (`build`).

    Paths are planned on the host, before anything is mounted: each is resolved one component at
    a time, recreating the symbolic links on the way. `build` holds each bind mount's source open
    (O_PATH) before the staging tmpfs may hide it.
    """

    def __init__(self) -> None:
        # path in the new root -> ("bind", dir, flags) | ("cover",) | ("tmpfs",) | ("symlink", target)
        self.ops: dict[str, tuple] = {}

    def place(self, path: str, depth: int = 0) -> str:
        """Plan the symbolic links on `path`; return its real path on the host."""
        if depth > 40:
            raise OSError(40, f"too many symbolic links: {path}")
        cur = "/"
        for part in os.path.normpath(os.path.abspath(path)).strip("/").split("/"):
            if not part:
                continue
            nxt = os.path.join(cur, part)
            if os.path.islink(nxt):
                target = os.readlink(nxt)
                self.ops.setdefault(nxt, ("symlink", target))
                cur = self.place(os.path.join(cur, target), depth + 1)
            else:
                cur = nxt
        return cur

    def add(self, path: str, kind: str, dev: bool = False) -> None:
        """Plan `path` (which must exist, or nothing is planned) as a bind mount, a cover or a tmpfs."""
        if kind != "tmpfs" and not os.path.lexists(path):
            return
        real = self.place(path)
        old = self.ops.get(real, ("",))[0]
        if real == "/" or old in ("tmpfs", "cover") or (old == "bind" and kind == "bind"):
            return
        if kind == "bind":
            flags = MS_NOSUID | (0 if dev else MS_NODEV)
            f_flag = os.statvfs(real).f_flag
            flags |= sum(ms for st, ms in _LOCKED if f_flag & st)
            self.ops[real] = ("bind", os.path.isdir(real), flags)
        else:
            self.ops[real] = (kind,)

    def build(self, staging: str = "/tmp") -> str:
        """Make the planned root on a tmpfs at `staging`, pivot into it; return "pivot_root" or "chroot".

        Call in a fresh mount namespace whose mounts are private (a bind mount's source must be
        opened in the namespace it is mounted in). Raises OSError when the OS refuses a step; the
        caller then falls back to the wider view.
        """
        os.umask(0o022)
        fds = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path, op in self.ops.items() if op[0] == "bind"}
        try:
            return self._build(staging, fds)
        finally:
            for fd in fds.values():
                os.close(fd)

    def _build(self, staging: str, fds: dict[str, int]) -> str:
        mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=8m,nr_inodes=16384")
        ours, binds, covers = {"/"}, set(), []
        for path in sorted(self.ops, key=lambda p: (p.count("/"), p)):
            op = self.ops[path]
            container = max((p for p in ours | binds if inside(path, p)), key=len)
            target = staging + path
            if container in binds:  # the host's own tree shows through: it is there already
                if op[0] == "cover" and os.path.isdir(target):
                    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=4096")
                    ours.add(path)
                    covers.append(target)
                continue
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            if op[0] == "symlink":
                os.symlink(op[1], target)
            elif op[0] == "bind":
                _, is_dir, flags = op
                if is_dir:
                    os.mkdir(target, 0o755)
                else:
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
                mount(f"/proc/self/fd/{fds[path]}", target, None, MS_BIND)
                mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
                binds.add(path)
            elif op[0] == "cover":
                os.makedirs(target, 0o755, exist_ok=True)
            else:
                os.makedirs(target, 0o755, exist_ok=True)
                mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, TMP_OPTIONS)
                ours.add(path)
        for target in covers:
            mount(None, target, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.chdir(staging)
        how = "pivot_root"
        nr = _PIVOT_ROOT.get(platform.machine())
        if nr is not None and _libc.syscall(nr, b".", b".") == 0:
            if _libc.umount2(b".", MNT_DETACH) != 0:
                raise OSError(ctypes.get_errno(), "could not detach the old root")
        else:
            os.chroot(".")
            how = "chroot"
        os.chdir("/")
        mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        return how


def site_dirs() -> set[str]:
    """Every folder that holds installed packages for this interpreter (real paths)."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs = set(site.getsitepackages(list(prefixes)))
    dirs.add(site.getusersitepackages())
    dirs.update(e for e in sys.path if os.path.basename(e) in ("site-packages", "dist-packages"))
    return {os.path.realpath(d) for d in dirs if d}


def stdlib_paths() -> set[str]:
    """The standard library's folders and zip files (real paths)."""
    import _struct
    import math
    import select

    paths = {os.path.dirname(os.__file__)}
    paths.update(os.path.dirname(m.__file__) for m in (_struct, math, select) if getattr(m, "__file__", None))
    bases = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    sites = site_dirs()
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if real and os.path.exists(real) and any(inside(real, b) for b in bases) \
                and not any(inside(real, s) for s in sites):
            paths.add(real)
    return {os.path.realpath(p) for p in paths}


def library_dirs(exclude: Iterable[str]) -> set[str]:
    """Folders of the files this process has mapped (its shared libraries), but those under `exclude`."""
    exclude = [os.path.realpath(p) for p in exclude]
    executable = os.path.realpath(sys.executable)  # mapped, but never needed again: its folder stays out
    dirs = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/") or fields[5].endswith("(deleted)\n"):
                continue
            path = fields[5].rstrip("\n")
            if path.startswith(("/dev/", "/proc/", "/sys/", "/memfd:")) or path == executable:
                continue
            d = os.path.dirname(os.path.realpath(path))
            if d != "/" and not any(inside(d, e) for e in exclude):
                dirs.add(d)
    return dirs


def module_paths(name: str) -> list[str]:
    """What to show of the imported top-level module `name`: its folder(s) or file, `.libs`, dist-info."""
    mod = sys.modules.get(name)
    if mod is None:
        return []
    paths = [p for p in getattr(mod, "__path__", []) if os.path.isdir(p)]
    if not paths and getattr(mod, "__file__", None):
        paths = [mod.__file__]
    key = name.lower().replace("-", "_")
    for parent in {os.path.dirname(os.path.realpath(p)) for p in paths}:
        try:
            entries = os.listdir(parent)
        except OSError:
            continue
        for entry in entries:
            low = entry.lower().replace("-", "_")
            version = low[len(key) + 1:len(key) + 2]
            if low == f"{key}.libs" or (low.startswith(f"{key}_") and version.isdigit() and low.endswith(".dist_info")):
                paths.append(os.path.join(parent, entry))
    return paths


def plan(packages: Iterable[str], files: Iterable[str]) -> Root:
    """The minimal root for this interpreter, the imported top-level `packages` and the `files`."""
    import zoneinfo

    root = Root()
    root.add("/tmp", "tmpfs")
    for name in DEV_NODES:
        root.add(f"/dev/{name}", "bind", dev=True)
    shown = [p for name in packages for p in module_paths(name)]
    sites = site_dirs()
    for path in sorted(stdlib_paths() | library_dirs(exclude=[*shown, *sites])):
        root.add(path, "bind")
    for path in ("/etc/ld.so.cache", *(p for p in zoneinfo.TZPATH if os.path.isdir(p))):
        root.add(path, "bind")
    for path in ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib64"):
        if os.path.islink(path):
            root.place(path)
    for path in sorted(sites):
        root.add(path, "cover")
    for path in [*shown, *files]:
        root.add(path, "bind")
    return root
