"""What a job process shares that Python keeps out of sight: found once in the helper, watched by the check.

`sandbox_guard` compares what Python reads back. This module adds state held where no module
attribute points, reached through the collector while the helper loads (`find()`, before the
helper's `gc.freeze`: `gc.get_referrers` skips frozen objects):
- the interpreter's lists of `os.register_at_fork` handlers (a program's handler would run in a later
  program's `os.fork`, which fails), found through a no-op handler registered in each of them;
- the codec search functions (`codecs.register`), the codec cache, and the error handlers
  (`codecs.register_error`), found through the standard ones they hold;
- the caches of `functools.lru_cache` (typing's: `List[int]` is one object for every program of a
  process), and the attributes of what they held then.
`lists()` and `dicts()` give them to the check (a list's length, a dict's version tag). The helper
freezes its heap through `freeze_heap()`, which puts a canary first in the collector's permanent
generation: `gc.unfreeze` moves that generation, and so changes the canary's predecessor, which the
check reads in O(1) (`gc.get_freeze_count` walks every frozen object: milliseconds). In the job
process, `state()` (once, when the process starts) and `changed(state)` (after each program) compare
that, the scheduling policy (`os.sched_setscheduler`) and the handler of every signal in the kernel
(`faulthandler.enable` and `register` install theirs in C, where `signal.getsignal` does not look; a
handler installed and taken off again is seen too, see `plain_dispositions`),
and whether finalizers left garbage. `settle()` runs the finalizers of a program's garbage and cancels
the watchdog thread that `faulthandler.dump_traceback_later` starts (it would end the process during a
later program). `thread_states()` counts the interpreter's thread states, which a thread has before
it first runs. Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import codecs
import ctypes
import encodings
import gc
import importlib.machinery
import importlib.util
import os
import posix
import signal
from collections.abc import Callable
from types import ModuleType

_LISTS: list[list] = []
_DICTS: list[dict] = []
_sigaction = ctypes.CDLL(None, use_errno=True).sigaction  # resolved here: a lookup in a job process changes a watched dict
_ACTION = ctypes.create_string_buffer(256)  # a glibc struct sigaction (152 bytes on x86_64), and room
_SIGNALS = range(1, signal.SIGRTMAX + 1)
_SA_ONSTACK = 0x08000000  # in sa_flags, bytes 136 to 140 of glibc's struct sigaction
# A tracked object's PyGC_Head (_gc_next, _gc_prev) sits just before it; _gc_prev's two low bits are flags.
_GC_PREV, _GC_FLAGS = -ctypes.sizeof(ctypes.c_size_t), 3
_FROZEN: dict = {}  # "canary": first in the permanent generation; "head": its predecessor (the list's head)


def _thread_state_counter() -> Callable[[], int]:
    """A counter of the interpreter's thread states. A thread started by `_thread.start_new_thread` has one from
    the moment the call returns, while `_thread._count()` (and the audit event, before 3.13) only sees it once
    the new thread first runs: a check that trusted those could pass a process whose thread is about to start."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    head, after, interpreter = api.PyInterpreterState_ThreadHead, api.PyThreadState_Next, api.PyInterpreterState_Get

    def count() -> int:
        state, n = head(interpreter()), 0
        while state:
            n, state = n + 1, after(state)
        return n

    return count


# The number of the interpreter's thread states: the check compares it, the helper checks that it is alone
# before it forks with glibc's fork.
thread_states = _thread_state_counter()


def _private_faulthandler() -> ModuleType:
    """A faulthandler module of the check's own (its settings are the process's, whichever module set them)."""
    spec = importlib.machinery.BuiltinImporter.find_spec("faulthandler")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_FAULTHANDLER = _private_faulthandler()


def _noop() -> None:
    """The helper's own at-fork handler: registered only so the lists that hold it can be found."""


def _referrers(obj: object, kind: type) -> list:
    return [r for r in gc.get_referrers(obj) if type(r) is kind]


def _cached(wrapper: object) -> tuple[list[dict], list[dict]]:
    """An lru_cache wrapper's cache dict, and the attribute dicts of the results it holds."""
    own = getattr(wrapper, "__dict__", None)
    caches = [d for d in gc.get_referents(wrapper) if type(d) is dict and d is not own]
    attrs = []
    for cache in caches:
        for value in list(cache.values()):  # a bounded cache's value is a link: (key, result) among its referents
            for result in gc.get_referents(value) if type(value).__name__ == "_lru_list_elem" else [value]:
                try:
                    found = object.__getattribute__(result, "__dict__")
                except (AttributeError, TypeError):
                    continue
                if type(found) is dict:
                    attrs.append(found)
    return caches, attrs


def find() -> None:
    """In the helper, once everything is loaded and before `gc.freeze`: find what `lists()` and `dicts()` give."""
    posix.register_at_fork(before=_noop, after_in_parent=_noop, after_in_child=_noop)  # not the recording wrapper
    _LISTS[:] = [*_referrers(_noop, list), *_referrers(encodings.search_function, list)]
    dicts = [*_referrers(codecs.lookup("utf-8"), dict), *_referrers(codecs.lookup_error("strict"), dict)]
    for wrapper in [o for o in gc.get_objects() if type(o).__name__ == "_lru_cache_wrapper"]:
        caches, attrs = _cached(wrapper)
        dicts += caches + attrs
    _DICTS[:] = list({id(d): d for d in dicts}.values())


def lists() -> list[list]:
    """The interpreter's lists the check compares by length (they only grow, or shrink by unregistering)."""
    return _LISTS


def dicts() -> list[dict]:
    """The dicts the check watches like a module's (codec cache and error handlers, lru caches, cached results)."""
    return _DICTS


def _predecessor(obj: object) -> int:
    return ctypes.c_size_t.from_address(id(obj) + _GC_PREV).value & ~_GC_FLAGS


def freeze_heap() -> None:
    """In the helper, for `gc.collect(); gc.freeze()`: the same, with a canary first in the permanent generation.

    After a full collection the young generations are empty, so the next object tracked is the first
    that `gc.freeze` moves; its predecessor is then the permanent generation's head. A probe checks it
    on this interpreter (the same head for the probe and the canary, and unfreezing moved the probe);
    where it does not hold, `changed` falls back to counting frozen objects."""
    gc.collect()
    probe = [None]
    gc.freeze()
    head = _predecessor(probe)
    gc.unfreeze()
    moved = _predecessor(probe) != head
    del probe
    gc.collect()
    canary = [None]
    gc.freeze()
    _FROZEN.update(canary=canary, head=head if moved and _predecessor(canary) == head else 0,
                   count=gc.get_freeze_count())


def _unfrozen() -> bool:
    """Whether a program unfroze the helper's frozen heap (`gc.unfreeze`)."""
    if _FROZEN.get("head"):
        return _predecessor(_FROZEN["canary"]) != _FROZEN["head"]
    return gc.get_freeze_count() < _FROZEN.get("count", 0) // 2  # objects freed since are not an unfreeze


def settle() -> None:
    """After a program, before the check: collect its garbage, so the finalizers (`__del__`, weakref
    callbacks) of what it dropped run now, where the check sees what they change, not in a later
    program; cancel a traceback watchdog it left (the process's only one). Never raises."""
    try:
        _FAULTHANDLER.cancel_dump_traceback_later()
        gc.collect()
    except BaseException:  # noqa: BLE001 - the check reports what it cannot put right
        pass


def _handlers() -> tuple[bytes, ...]:
    """Every signal's handler, first 64 bits of mask and flags as the kernel holds them (glibc's struct
    sigaction: the rest of its 1024-bit mask is not the kernel's), b"" where the C library refuses to say."""
    found = []
    for sig in _SIGNALS:
        raw = _ACTION.raw if _sigaction(sig, None, _ACTION) == 0 else b""
        found.append(raw[:16] + raw[136:140])
    return tuple(found)


def plain_dispositions() -> None:
    """In the job process, once before `state()`: take SA_ONSTACK off every signal left at SIG_DFL or SIG_IGN.

    Python's `signal.signal` always sets that flag, and so had set it on what the helper ignores (SIGINT,
    SIGPIPE, SIGXFSZ) or reset: a program could install a handler on one, raise the signal, and put the
    old disposition back, leaving the kernel's action as it was. The handler is called with the running
    frame, whose callers are the job process's own (its programs' code and inputs, the check): with them
    it could rewrite the programs after it. Without the flag, putting a disposition back through Python
    is a change `changed` sees. Calls ctypes."""
    for sig in _SIGNALS:
        if _sigaction(sig, None, _ACTION) != 0:
            continue
        flags = int.from_bytes(_ACTION.raw[136:140], "little")
        if int.from_bytes(_ACTION.raw[:8], "little") in (0, 1) and flags & _SA_ONSTACK:  # SIG_DFL, SIG_IGN
            ctypes.memmove(ctypes.addressof(_ACTION) + 136, (flags & ~_SA_ONSTACK).to_bytes(4, "little"), 4)
            _sigaction(sig, _ACTION, None)


def state() -> tuple:
    """In the job process, once before its first program: what `changed` compares with. Calls ctypes."""
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority, _handlers()


def changed(before: tuple) -> str:
    """What the last program changed of `state()` and the frozen heap ("" when nothing). Calls ctypes.
    May raise: the check reports it."""
    if gc.collect():  # finalizers that left garbage of their own, to run in a later program
        return "garbage left by finalizers"
    if _unfrozen():
        return "the collector's frozen objects"
    names = ("the scheduling policy", "the scheduling priority", "a signal's handler in the kernel")
    return next((n for n, a, b in zip(names, state(), before) if a != b), "")
