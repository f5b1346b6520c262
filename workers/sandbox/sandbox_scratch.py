"""Where runs may write, put back as it was after every run or job process.

A run of a root helper (uid 65534) writes only in its own directory under /tmp. It may nest
directories there deeper than any recursive walk goes, take its own permissions off them, or fill
the tmpfs: `remove_tree` still removes all of it (iteratively, never following a link), so nothing is
left for the next run, whose own directory would otherwise not fit. A run of a rootless helper keeps
the helper's uid, and so owns the helper's scratch tmpfs (`/tmp`, and in the fallback view
`/var/tmp`, `/dev/shm`, `/run/lock`) as the helper does: it can write anywhere there, or take the
helper's own permissions off them. For such a helper, `prepare(places)` names them and records what
each holds when the helper is ready (its own skeleton: the folders on the way to an interpreter or
numpy installed under /tmp, which the minimal root mounts there); `tidy` puts each back as it was
(anything else removed, every mode restored), and `changed` tells a job process that a program wrote
there. Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import os
import stat

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A rootless helper's scratch tmpfs -> what it held when the helper was ready: relative path -> (mode, is a directory
# of this tmpfs, to be looked into). The place itself is "".
_places: dict[str, dict[str, tuple[int, bool]]] = {}


def _skeleton(place: str) -> dict[str, tuple[int, bool]]:
    """Every entry under `place`, not looking into other mounts (the minimal root's bind mounts under /tmp)."""
    dev = os.lstat(place).st_dev
    found, todo = {"": (stat.S_IMODE(os.lstat(place).st_mode), True)}, [""]
    while todo:
        rel = todo.pop()
        with os.scandir(os.path.join(place, rel)) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                path = os.path.join(rel, entry.name)
                inside = stat.S_ISDIR(st.st_mode) and st.st_dev == dev
                found[path] = (stat.S_IMODE(st.st_mode), inside)
                if inside:
                    todo.append(path)
    return found


def prepare(places: list[str]) -> None:
    """In the helper, once isolated: the scratch places its runs own (a rootless helper's; none for root)."""
    _places.clear()
    _places.update({p: _skeleton(p) for p in places})


def _differences(place: str, skeleton: dict[str, tuple[int, bool]], fix: bool, keep: str = "") -> str:
    """What differs in `place` from its `skeleton` ("" when nothing): an entry it did not hold (but `keep`), or a mode.
    With `fix`, put it back: remove the entry (never following a link), give the mode back. Never raises."""
    found = ""
    for rel in sorted((r for r, (_, inside) in skeleton.items() if inside), key=lambda r: r.count("/") if r else -1):
        path = os.path.join(place, rel) if rel else place
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):  # a link or file where a folder of the skeleton was
                found = found or f"files left in {place}"
                if fix:
                    remove_tree(path)
                continue
            if stat.S_IMODE(st.st_mode) != skeleton[rel][0]:
                found = found or f"the permissions of {path}"
                if fix:
                    os.chmod(path, skeleton[rel][0])
            for name in os.listdir(path):
                sub = os.path.join(rel, name)
                if sub not in skeleton and os.path.join(path, name) != keep:
                    found = found or f"files left in {place}"
                    if fix:
                        remove_tree(os.path.join(path, name))
                elif sub in skeleton and not skeleton[sub][1]:
                    mode = stat.S_IMODE(os.lstat(os.path.join(path, name)).st_mode)
                    if mode != skeleton[sub][0] and not stat.S_ISLNK(os.lstat(os.path.join(path, name)).st_mode):
                        found = found or f"the permissions of {os.path.join(path, name)}"
        except OSError:
            found = found or f"the permissions of {path}"
        if found and not fix:
            return found
    return found


def _empty(top: int) -> bool:
    """Remove everything inside the directory open at `top` (it stays open); whether all of it went.

    One descriptor at a time and a stack of names, so any depth fits; directories are made
    accessible (0700) before they are entered. Only for trees no live process changes.
    """
    names: list[str] = []
    cur = os.dup(top)
    try:
        while True:
            child = None
            with os.scandir(cur) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    os.unlink(entry.name, dir_fd=cur)
            if child is None and not names:
                return True
            if child is not None:
                os.chmod(child, 0o700, dir_fd=cur)  # a directory (no link), so following is the same
                names.append(child)
            nxt = os.open(child or "..", _DIR, dir_fd=cur)
            os.close(cur)
            cur = nxt
            if child is None:
                os.rmdir(names.pop(), dir_fd=cur)
    except OSError:
        return False
    finally:
        os.close(cur)


def remove_tree(path: str) -> bool:
    """Remove `path` and whatever it holds (a link is removed, never followed); whether it is gone. Never raises."""
    try:
        os.rmdir(path)  # the usual case: the run left its directory empty
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return True
        os.chmod(path, 0o700)
        fd = os.open(path, _DIR)
        try:
            done = _empty(fd)
        finally:
            os.close(fd)
        os.rmdir(path)
        return done
    except OSError:
        return False


def tidy(folder: str) -> None:
    """After a run or job process has been reaped: remove its directory; put a rootless helper's scratch
    places back as they were when it was ready. Never raises."""
    remove_tree(folder)
    for place, skeleton in _places.items():
        _differences(place, skeleton, fix=True)


def changed(folder: str) -> str:
    """What a program left in a rootless helper's scratch places outside `folder` (a job's check); "" if nothing."""
    for place, skeleton in _places.items():
        found = _differences(place, skeleton, fix=False, keep=folder)
        if found:
            return found
    return ""
