"""Tie child processes' lives to their parent's: a worker's death must take its engine with it.

Linux's PR_SET_PDEATHSIG makes the kernel SIGKILL a child when the thread that created it dies,
even when the parent itself was SIGKILLed and had no chance to clean up.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
_installed = False


def die_with_parent() -> None:
    """Call in a child: SIGKILL me when my parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: nothing to set
        return


def children_die_with_me() -> None:
    """Every process this one forks from now on (and their forks) dies when its parent dies."""
    global _installed
    if _installed:
        return
    os.register_at_fork(after_in_child=die_with_parent)
    _installed = True
