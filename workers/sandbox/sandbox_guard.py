"""What a job process shares between the programs it runs in turn, and the check that none changed it.

`Guard()` takes a snapshot in the confined job process before its first program; `guard.changed()` after each
program names the first shared thing that program changed ("" when none), and the helper then replaces the
process before the next program. Checked: the builtins, the attributes of every imported module and of the
instances modules hold, directly or in a module-level dict (`random._inst`, `json._default_encoder`, the
standard streams, the finders of `sys.path_importer_cache`: through each dict's version tag where the
interpreter has one, else the identity of every value), `sys.modules`, `sys.path`, `sys.meta_path` and
`sys.path_hooks`, trace and profile hooks, recursion, switch-interval and int-digits
limits, signal handlers, threads (every thread state, so a thread that has not run yet counts), atexit
callbacks, the collector's settings, debug flags and callbacks, warnings filters, numpy's error,
error-callback and print settings, decimal's contexts, cwd, umask, the environment, resource limits (the CPU
limit's hard one), interval timers, priority, CPU affinity, ABC registrations, async-generator hooks,
coroutine origin tracking, dlopen flags, the C locale, the length of every module-level list, set, deque and
bytearray (and of those such instances hold), whether the standard streams are closed, open descriptors
(with their flags and SIGIO owner), and the files and permissions of the job's directory. An audit hook
taints the process on operations that reach
past those (setting attributes of classes, frames, tracebacks' frames and other threads' frames,
`gc.get_objects`, ctypes, audit hooks of its own); `sandbox_hidden` adds what no module attribute reaches
(at-fork handlers, codecs, lru caches, frozen count, scheduling, signals in the kernel). Not seen: an
extension module's internals, an item replaced in place in a module-level list, and a program written to
defeat the check (numpy's array interface reads and writes memory without an audit event); run isolation, the
default, has no such holes. `reset()` puts back, before each program, what a run would see: numpy's global
generator and `random` as the process started with them (see `sandbox_run.prepare`). Part of the helper:
imports nothing from the project.
"""

from __future__ import annotations

import _locale
import _signal
import _thread
import abc
import atexit
import builtins
import collections
import fcntl
import gc
import os
import random
import resource
import select
import signal
import sys
import threading
import warnings
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType

import numpy as np
import sandbox_hidden as hidden
from sandbox_tags import OFFSET, TagReader

# Audit events after which a process may hold changes that the snapshot cannot see.
TAINTING = ("object.__setattr__", "object.__delattr__", "object.__getattr__", "sys._getframe", "sys.settrace",
            "sys.setprofile", "sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
            "ctypes.", "_thread.start_new_thread", "sys._current_frames", "sys._current_exceptions",
            "os.chdir", "os.fchdir", "os.putenv", "os.unsetenv",
            "signal.", "function.__new__", "code.__new__", "setopencode")
_LIMITS = (resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC,
           resource.RLIMIT_CORE, resource.RLIMIT_STACK, resource.RLIMIT_DATA)
_SIGNALS = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))
_TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
_getsignal = _signal.getsignal  # the C function: signal.getsignal wraps each answer in an enum, 25 times slower
_CONTAINERS = (list, set, bytearray, collections.deque)
_MAX_FD = 64
_IMMUTABLE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE
_OWN_FDS = 4  # 0, 1 and 2, the result channel


_WATCHED: tuple[dict, list[dict], TagReader | None, list] | None = None
_HIDDEN: list[ModuleType] = []  # modules out of sys.modules that the check still watches (see `watch_hidden`)


def watch_hidden(modules: list[ModuleType]) -> None:
    """Watch these modules too, though they are not in sys.modules (the sandbox's own, hidden from
    programs, which can still reach them through a function's `__globals__`)."""
    _HIDDEN[:] = modules


def _stream_state(stream: object) -> tuple:
    """Whether a standard stream is closed, and the attributes set on it and on the layers beneath it
    (the run's own writer holds its descriptor as an attribute)."""
    layers = (stream, getattr(stream, "buffer", None), getattr(getattr(stream, "buffer", None), "raw", None))
    return (getattr(stream, "closed", None),
            *(tuple(getattr(layer, "__dict__", {}).items()) for layer in layers if layer is not None))


def _decimal_contexts() -> str:
    """The decimal module's current and template contexts (precision, rounding, flags, traps), or ""
    where it is not loaded: a program that sets `getcontext().prec` changes later programs' arithmetic."""
    module = sys.modules.get("decimal")
    contexts = () if module is None else (module.getcontext(), module.DefaultContext, module.BasicContext,
                                          module.ExtendedContext)
    return "|".join(map(repr, contexts))


def _numpy_random_state() -> dict | None:
    """numpy's global generator's state (with its buffered 32 bits), or None where numpy.random is not
    loaded (a program that imports it changes sys.modules, and so is a change the check sees)."""
    module = sys.modules.get("numpy.random")
    return None if module is None else module.get_state(legacy=False)


_NOT_INSTANCES = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType)


def _instance_dicts(module_dicts: list) -> list[dict]:
    """The attribute dicts of module-level instances (`random._inst`, `json._default_encoder`, the
    standard streams): a program that sets an attribute on one changes what later programs call."""
    found: dict[int, dict] = {}
    for d in module_dicts:
        if type(d) is not dict:
            continue
        for v in list(d.values()):
            if isinstance(v, _NOT_INSTANCES):
                continue
            try:
                attrs = object.__getattribute__(v, "__dict__")
            except (AttributeError, TypeError):
                continue
            if type(attrs) is dict:
                found[id(attrs)] = attrs
    return list(found.values())


def watched() -> tuple[dict, list[dict], TagReader | None, list]:
    """(sys.modules as it is, the dicts the check watches, the reader of their version tags or None, the
    module-level lists, sets, deques and bytearrays, whose lengths the check compares).

    The same in every job process the helper forks (the dicts sit at the same addresses), so the
    helper calls this once after loading everything; a process whose sys.modules has grown since
    (a lazy import in the helper) builds its own.
    """
    global _WATCHED
    if _WATCHED is not None and len(_WATCHED[0]) == len(sys.modules):
        return _WATCHED
    modules = dict(sys.modules)
    own = [getattr(m, "__dict__", None) for m in [*modules.values(), *_HIDDEN]]
    dicts = [sys.modules, builtins.__dict__, os.environ._data, *(d for d in own if type(d) is dict)]
    classes = {id(v): v for d in dicts[3:] for v in list(d.values())
               if isinstance(v, type) and not v.__flags__ & _IMMUTABLE}  # pure-Python classes
    dicts += [d for cls in classes.values() for d in gc.get_referents(cls.__dict__) if type(d) is dict]
    level = [v for d in dicts[3:] for v in list(d.values()) if type(v) is dict]  # module-level dicts
    dicts += level
    # The instances modules hold, directly or in a module-level dict (the finders of sys.path_importer_cache,
    # whose cached file names decide what a later import finds), and the containers among their attributes.
    instances = _instance_dicts(own + level)
    held = [*dicts[3:], *instances]
    containers = list({id(v): v for d in held for v in list(d.values()) if type(v) in _CONTAINERS}.values())
    containers += hidden.lists()
    dicts += instances + hidden.dicts()
    tags = None if OFFSET is None else TagReader([id(d) + OFFSET for d in dicts])
    _WATCHED = modules, dicts, tags, containers
    return _WATCHED


class Guard:
    """A snapshot of what the programs of one job process share; see the module docstring."""

    containers: list = []  # noqa: RUF012 - set per instance; `warm` reads the class's
    streams: tuple = ()

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.tainted = ""
        self.checking = False  # the check's own ctypes calls are not the program's
        self.containers = watched()[3]
        self.streams = (sys.stdout, sys.stderr)  # every program's: a closed one fails the next program's print
        self.state = self._state()  # first, so whatever it imports lazily is in the snapshot below
        self.numpy_random = _numpy_random_state()
        self.random = random.getstate()
        self.fds = self._fds()
        self.folder_mode = os.stat(folder).st_mode
        hidden.plain_dispositions()
        self.hidden = hidden.state()
        self.modules, dicts, tags, _ = watched()
        self.alive = dicts  # a version tag is read at its dict's address: keep each dict alive
        if tags is not None:
            self.tags = tags
            self.values = tags()
        else:
            self.dicts = [(d, len(d), tuple(map(id, d.values()))) for d in dicts]
            self.environ = dict(os.environ)
        gc.freeze()  # the snapshot, like the helper's heap, is never walked by the collector
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple) -> None:
        if not self.tainted and not self.checking and event.startswith(TAINTING):
            self.tainted = f"audit event {event}"

    @staticmethod
    def warm() -> None:
        """Call what the check calls, so whatever that imports lazily is loaded before `watched()`."""
        Guard._state(Guard.__new__(Guard))
        _numpy_random_state()

    def _state(self) -> tuple:
        umask = os.umask(0o022)
        os.umask(umask)
        return (
            tuple(sys.path), tuple(sys.meta_path), tuple(sys.path_hooks), sys.gettrace(), sys.getprofile(),
            sys.getrecursionlimit(), sys.getswitchinterval(), sys.get_int_max_str_digits(),
            tuple(map(_getsignal, _SIGNALS)), gc.isenabled(), gc.get_threshold(), tuple(gc.callbacks),
            tuple(warnings.filters), str(np.geterr()), np.getbufsize(), str(np.get_printoptions()),
            os.getcwd(), umask, tuple(map(resource.getrlimit, _LIMITS)),
            tuple(map(signal.getitimer, _TIMERS)), os.getpriority(os.PRIO_PROCESS, 0),
            tuple(sorted(os.sched_getaffinity(0))), abc.get_cache_token(), sys.get_asyncgen_hooks(),
            sys.get_coroutine_origin_tracking_depth(), sys.getdlopenflags(), _locale.setlocale(_locale.LC_ALL),
            np.geterrcall(), tuple(map(len, self.containers)), gc.get_debug(),
            resource.getrlimit(resource.RLIMIT_CPU)[1], _decimal_contexts(),
            tuple(map(_stream_state, self.streams)),
        )

    def _fds(self) -> tuple:
        """The job's own descriptors (by file, flags and owner) and which of the others are open."""
        if not hasattr(self, "poll"):
            self.poll = select.poll()
            for fd in range(_OWN_FDS, _MAX_FD):
                self.poll.register(fd, 0)
        own = []
        for fd in range(_OWN_FDS):
            try:
                st = os.fstat(fd)  # which file, how it is open (O_NONBLOCK, O_ASYNC), the channel's SIGIO target
                owner = fcntl.fcntl(fd, fcntl.F_GETOWN) if fd == _OWN_FDS - 1 else 0
                own.append((st.st_dev, st.st_ino, fcntl.fcntl(fd, fcntl.F_GETFL), owner))
            except OSError:
                own.append(None)
        return tuple(own), tuple(sorted(self.poll.poll(0)))

    def reset(self) -> None:
        """Before each program, the generators as the process started with them (numpy's global one and
        `random`), as every run starts with them."""
        random.setstate(self.random)
        if self.numpy_random is not None:
            np.random.set_state(self.numpy_random)

    def changed(self) -> str:
        """What the last program changed of the shared state ("" when nothing); never raises."""
        try:
            hidden.settle()
            return self._changed()
        except BaseException as exc:  # noqa: BLE001 - a program may have broken what the check uses
            return f"the check failed: {type(exc).__name__}"
        finally:
            self.checking = False

    def _changed(self, map=map) -> str:  # noqa: A002 - bound now: builtins may be patched
        if self.tainted:
            return self.tainted
        if OFFSET is not None:
            if self.tags() != self.values:
                return "a module's or class's attributes, sys.modules, the builtins or the environment"
        elif any(len(d) != n or tuple(map(id, d.values())) != ids for d, n, ids in self.dicts):
            return "a module's or class's attributes, sys.modules or the builtins"
        elif dict(os.environ) != self.environ:
            return "the environment"
        if threading.active_count() != 1 or _thread._count() != 0:  # type: ignore[attr-defined]
            return "a thread was left running"
        self.checking = True
        if hidden.thread_states() != 1:
            return "a thread was started"
        if atexit._ncallbacks() != 0:  # type: ignore[attr-defined]
            return "an atexit callback"
        state = self._state()
        if state != self.state:
            names = ("sys.path", "sys.meta_path", "sys.path_hooks", "trace hook", "profile hook", "recursion limit",
                     "switch interval", "int digits", "signal handlers", "gc", "gc thresholds", "gc callbacks",
                     "warnings filters", "numpy error settings", "numpy buffer size", "numpy print options", "cwd",
                     "umask", "resource limits", "interval timers", "priority", "CPU affinity", "ABC registrations",
                     "async generator hooks", "coroutine origin tracking", "dlopen flags", "locale", "numpy error callback",
                     "a module's list or set", "gc debug flags", "the CPU time limit", "decimal contexts", "the standard streams")
            return next(n for n, a, b in zip(names, state, self.state) if a != b)
        if self._fds() != self.fds:
            return "open descriptors"
        if os.listdir(self.folder):
            return "files left in the job's directory"
        if os.stat(self.folder).st_mode != self.folder_mode:
            return "the job's directory's permissions"
        return hidden.changed(self.hidden)
