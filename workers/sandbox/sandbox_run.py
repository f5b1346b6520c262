"""One run: the spawner forks the helper's image, the child confines itself and runs the program on
every input, the helper reads its verdicts.

The child holds exactly four descriptors when the program starts: 0 (/dev/null), 1 and 2 (its
captured output, a memfd the helper reads) and 3 (its result channel, see `sandbox_channel`);
everything else the spawner had open is closed. Whatever the program does to them, `run_one` returns one verdict per
input and never raises for it. Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import numpy as np
import sandbox_fork as forking
import sandbox_scratch as scratch
import sandbox_seccomp as seccomp
from sandbox_channel import MAX_LINE, check_grid, clean_message, parse_results
from sandbox_stdio import OUTPUT_CAP, STDERR, STDOUT

if TYPE_CHECKING:
    from sandbox_spawner import Spawner

NOBODY = 65534
CHANNEL = 3
FAILED = 70  # the child's own exit status when it could not report (its channel was closed or replaced)
MAX_CHANNEL = 4 << 20
_CLOSE_RANGE = 436  # the same number on every Linux architecture
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
# Made here, in the helper, once: a forked run only uses them (whatever a run creates costs it copied pages).
_prctl, _syscall = _libc.prctl, _libc.syscall
_DEVNULL = os.open(os.devnull, os.O_RDONLY)  # a run's stdin


_seccomp: seccomp.Installer | None = None


def _describe(e: BaseException) -> str:
    """`Type: message` of an exception raised by untrusted code, even when its __str__ raises."""
    try:
        return clean_message(f"{type(e).__name__}: {e}")
    except BaseException:  # noqa: BLE001 - an exception's own __str__ or __name__ may raise
        return "an exception that cannot be printed"


def _emit(**kw: object) -> None:
    data = (json.dumps(kw) + "\n").encode()
    while data:
        data = data[os.write(CHANNEL, data):]


def _close_from(first: int) -> None:
    """Close every descriptor from `first` up: close_range(2) where the kernel has it (5.9+)."""
    if _syscall(_CLOSE_RANGE, first, 0xFFFFFFFF, 0) != 0:
        os.closerange(first, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def prepare(layers: dict[str, bool], at_fork: list[dict], single_threaded: bool, places: list[str]) -> None:
    """In the helper, once it is ready: set up what every run it forks inherits instead of doing it itself.

    - No core files, and a write past RLIMIT_FSIZE fails (EFBIG) instead of killing (SIGXFSZ ignored).
    - The seccomp filter held ready, `NO_NEW_PRIVS` set (`sandbox_seccomp.Installer`).
    - How runs are forked (`sandbox_fork.prepare`).
    - The scratch `places` a rootless helper's runs own, tidied after each (`sandbox_scratch.prepare`).
    """
    scratch.prepare(places)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    global _seccomp
    if layers.get("seccomp"):
        _seccomp = seccomp.Installer()
    forking.prepare(at_fork, single_threaded)


def die_with_parent() -> None:
    """SIGKILL when the parent process dies (PR_SET_PDEATHSIG; a fork does not inherit it)."""
    _prctl(_PR_SET_PDEATHSIG, 9)


def devnull() -> int:
    """The helper's descriptor on /dev/null (a run's stdin)."""
    return _DEVNULL


def _confine(memory_mb: int, cpu_s: int, workdir: str, wfd: int, out: int, layers: dict[str, bool]) -> None:
    """Limits, descriptors, user and seccomp for the forked child (a run, or a job process), in that order.

    What every run shares (no core files, SIGXFSZ ignored, the filter ready) the helper set once (`prepare`).
    """
    os.setpgid(0, 0)
    _prctl(_PR_SET_PDEATHSIG, 9)  # SIGKILL: die with the spawner, which dies with the helper
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    os.chdir(workdir)
    # The helper's descriptors 0 to 2 are always open, so `out`, `wfd` and `_DEVNULL` are above 2, and in
    # this order none is replaced before it is copied.
    for fd, new in ((_DEVNULL, 0), (out, 1), (out, 2), (wfd, CHANNEL)):
        os.dup2(fd, new)
    _close_from(CHANNEL + 1)  # the helper's pipes, the read end, anything a DSL opened
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    sys.stdout, sys.stderr = STDOUT, STDERR
    if layers.get("unprivileged_user"):
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))
    if layers.get("seccomp"):
        if _seccomp is None:
            seccomp.install(os.getpid())
        else:
            _seccomp.install(os.getpid())


def _program(code: str, inputs: list) -> None:
    """Run the program in the confined child and report one line per input (or one `load` line)."""
    scope = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(compile(code, "<candidate>", "exec"), scope)
    except MemoryError:
        return _emit(error="memory", message="MemoryError while loading the program", load=True)
    except SyntaxError as e:
        return _emit(error="syntax_error", message=clean_message(f"line {e.lineno}: {e.msg}"), load=True)
    except BaseException as e:  # noqa: BLE001 - untrusted code may raise anything
        return _emit(error="exception", message=_describe(e), load=True)
    fn = scope.get("transform")
    if not callable(fn):
        return _emit(error="no_transform", message="the program defines no function transform", load=True)
    for grid in inputs:
        try:
            result, reason = check_grid(fn(np.array(grid, dtype=np.int64)))
            verdict = {"error": "invalid_output", "message": reason} if reason else {"output": result}
        except MemoryError:
            verdict = {"error": "memory", "message": "MemoryError"}
        except RecursionError:
            verdict = {"error": "exception", "message": "RecursionError: maximum recursion depth exceeded"}
        except BaseException as e:  # noqa: BLE001
            verdict = {"error": "exception", "message": _describe(e)}
        _emit(**verdict)


def _child(req: dict, workdir: str, wfd: int, out: int, layers: dict[str, bool]) -> None:
    try:
        _confine(int(req["memory_mb"]), int(float(req["timeout"])) + 1, workdir, wfd, out, layers)
    except BaseException:  # noqa: BLE001 - a run that cannot be confined must not run
        os._exit(FAILED)
    try:
        _program(req["code"], req["inputs"])
    except BaseException:  # noqa: BLE001 - the channel was closed or replaced under us
        os._exit(FAILED)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or closed them
            pass
    os._exit(0)


def _read(rfd: int, timeout: float, start: float) -> tuple[bytes, str]:
    """The channel's bytes until EOF, the deadline, or a flood; and how reading ended."""
    buf = b""
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            return buf, "timeout"
        ready, _, _ = select.select([rfd], [], [], left)
        if not ready:
            continue
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            return buf, "eof"
        buf += chunk
        if len(buf) > MAX_CHANNEL or len(buf) - (buf.rfind(b"\n") + 1) > MAX_LINE:
            return buf, "flood"


def _exited(pid: int, left: float) -> bool:
    """Wait up to `left` seconds for `pid` to exit (without reaping it); whether it did.

    Where pidfds are missing (Linux < 5.3) it does not wait, and says yes.
    """
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return True
    try:
        ready, _, _ = select.select([fd], [], [], max(left, 0.0))
        return bool(ready)
    finally:
        os.close(fd)


def _missing(how: str, status: int, timeout: float) -> dict:
    """The verdict of every input the run gave no result for, from how it ended."""
    if how == "timeout":
        return {"error": "timeout", "message": f"no result within {timeout:g} s"}
    if how == "flood":
        return {"error": "crashed", "message": "the run flooded its result channel"}
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
        return {"error": "timeout", "message": "CPU time limit exceeded"}
    if os.WIFSIGNALED(status):
        return {"error": "crashed", "message": f"killed by signal {os.WTERMSIG(status)}"}
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == FAILED:
        return {"error": "crashed", "message": "the run could not report its results (its result channel was "
                                               "closed or replaced)"}
    return {"error": "crashed", "message": "the program ended the process"}


def _captured(out: int) -> str:
    """What the run printed into its output memfd, capped (whatever it did to its own descriptors)."""
    try:
        return os.pread(out, OUTPUT_CAP, 0).decode("utf-8", "replace")
    except OSError:
        return ""


_runs = 0


def workdir() -> str:
    """A fresh, empty directory for one run under /tmp (owned by the run's user), made cheaply.

    /tmp is the helper's own tmpfs (only it may create there), so a counter names it; where the
    OS gave no mount namespace, a name that exists already falls back to `mkdtemp`.
    """
    global _runs
    _runs += 1
    path = f"/tmp/arcsynth-run-{os.getpid()}-{_runs}"
    try:
        os.mkdir(path, 0o700)
    except OSError:
        path = tempfile.mkdtemp(prefix="arcsynth-run-")
    return path


def remove(path: str) -> None:
    """Once its process is reaped: remove a run's directory, whatever it left there, and put back a rootless
    helper's scratch places (`sandbox_scratch.tidy`: one rmdir in the usual case). Never raises."""
    scratch.tidy(path)


def finish(pid: int, rfd: int, spawner: Spawner) -> int:
    """Kill a run or job process and its group, close its channel, have the spawner reap it; its wait status."""
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.close(rfd)
    return spawner.reap(pid)


def run_one(req: dict, layers: dict[str, bool], spawner: Spawner) -> dict:
    """Run `req` (code, inputs, timeout, memory_mb) in a fresh confined fork; one verdict per input.

    Returns {"results": [verdict per input], "seconds": wall time, "output": what the run printed,
    capped}. Each verdict is {"output": grid} or {"error": kind, "message": text}. The spawner forks
    the run (`sandbox_spawner`); raises `SpawnerGone` if it is gone.
    """
    inputs = req["inputs"]
    timeout = float(req["timeout"])
    folder = workdir()
    try:
        if layers.get("unprivileged_user"):
            os.chown(folder, NOBODY, NOBODY)
        start = time.monotonic()
        pid, rfd, out = spawner.spawn(b"r", req, folder)
        try:
            buf, how = _read(rfd, timeout, start)
            if how == "eof" and not _exited(pid, timeout - (time.monotonic() - start)):
                how = "timeout"  # it closed its channel, then ran out of time
        finally:
            try:
                status = finish(pid, rfd, spawner)
            finally:
                output = _captured(out)
                os.close(out)
    finally:
        remove(folder)
    results, corrupt = parse_results(buf, len(inputs), complete=how == "eof")
    if len(results) < len(inputs):
        fill = corrupt or _missing(how, status, timeout)
        results += [fill] * (len(inputs) - len(results))
    return {"results": results, "seconds": time.monotonic() - start, "output": output}
