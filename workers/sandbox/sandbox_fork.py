"""How the helper's processes are forked: glibc's fork without CPython's after-fork work, where it has none to do.

`os.fork()` makes the child repair the interpreter's threads and locks and run every
`os.register_at_fork` handler: a few hundred pages copied per run, for nothing when the forking
process has one thread (no lock can be held by another). After `prepare(at_fork, single_threaded)`,
`fork()` calls glibc's fork (with the GIL held) and, by hand, the handlers in `at_fork` (every
registration since the helper started) that are not CPython's own: threading's (nothing to repair)
and random's (it reseeds: here every run starts with `random` as the helper left it, as with numpy's
global generator, so a program gives the same output in every run, and job isolation can put the
same state back). With more than one thread, `os.fork()`. Part of the helper: imports nothing from
the project.
"""

from __future__ import annotations

import ctypes
import os

_glibc_fork = ctypes.PyDLL(None, use_errno=True).fork  # called with the GIL held
_fork_handlers: list[dict] | None = None  # None: os.fork; a list: glibc's fork, calling these at-fork handlers
_CPYTHON_AT_FORK = frozenset({"random", "threading"})  # handlers a plain fork leaves out


def prepare(at_fork: list[dict], single_threaded: bool) -> None:
    """Choose how `fork()` forks: see the module docstring."""
    global _fork_handlers
    own = [h for h in at_fork if any(getattr(f, "__module__", None) not in _CPYTHON_AT_FORK for f in h.values())]
    _fork_handlers = own if single_threaded else None


def _call(handlers: list[dict], which: str) -> None:
    for handler in handlers if which != "before" else reversed(handlers):  # as os.fork orders them
        fn = handler.get(which)
        if fn is not None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - os.fork too ignores a failing handler
                pass


def fork() -> int:
    """Fork the calling process: see the module docstring for how. Raises OSError."""
    handlers = _fork_handlers
    if handlers is None:
        return os.fork()
    _call(handlers, "before")
    pid = _glibc_fork()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork failed")
    _call(handlers, "after_in_child" if pid == 0 else "after_in_parent")
    return pid
