"""Tie child processes' lives to their parent's: a worker's death must take its engine with it.

Linux's PR_SET_PDEATHSIG makes the kernel SIGKILL a child when the thread that created it dies,
even when the parent itself was SIGKILLed and had no chance to clean up.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable

PR_SET_PDEATHSIG = 1
_installed = False


def die_with_parent() -> None:
    """Call in a child: SIGKILL me when my parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: nothing to set
        return


_SPAWN_PRELUDE = (
    "import ctypes as _c, os as _o, signal as _s; "
    "_c.CDLL(None).prctl(1, _s.SIGKILL); "
    "_o.getppid() == {ppid} or _o._exit(1); "
)


def _patch_spawn() -> None:
    """Make multiprocessing's `spawn` children set PR_SET_PDEATHSIG first thing after exec.

    vLLM's CPU platform forces the spawn start method; fork hooks never run in such children, so
    the prelude rides on the `-c` program that every spawned interpreter executes.
    """
    import multiprocessing.spawn as spawn

    original = spawn.get_command_line
    if getattr(original, "_arcsynth", False):
        return

    def get_command_line(**kwds: object) -> list[str]:
        cmd = list(original(**kwds))
        if "-c" in cmd:
            i = cmd.index("-c") + 1
            cmd[i] = _SPAWN_PRELUDE.format(ppid=os.getpid()) + cmd[i]
        return cmd

    get_command_line._arcsynth = True  # type: ignore[attr-defined]
    spawn.get_command_line = get_command_line


def children_die_with_me() -> None:
    """Every process this one forks or spawns from now on (and theirs) dies when its parent dies."""
    global _installed
    if _installed:
        return
    os.register_at_fork(after_in_child=die_with_parent)
    _patch_spawn()
    _installed = True


def pid_alive(pid: int) -> bool:
    """Whether a process of this host exists (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def terminate(procs: Iterable[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM every process still running (a warm shutdown for a worker), SIGKILL those still running
    after one grace period shared by all, then reap them all."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    for proc in running:
        proc.wait(timeout=10)
