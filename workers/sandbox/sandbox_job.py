"""Job isolation: one confined process runs the programs of one job in turn, replaced when one leaves a trace.

`run_job(req, layers)` answers `{"codes": [...], "inputs": [...], "timeout": s, "memory_mb": m}`
with `{"runs": [reply per code]}`, each reply exactly as `sandbox_run.run_one` gives it for that
code alone. The job process is forked and confined exactly as a run is (`sandbox_run._confine`:
limits, the same four descriptors, uid 65534, seccomp; namespaces and the minimal root come from
the helper). For each program, in lockstep with the helper, it waits for the helper's go (SIGUSR1:
blocked between programs, unblocked while one runs, so a program sees a run's empty mask), puts
back the generators' states (`sandbox_guard.Guard.reset`), empties its output memfd, gives the
program its own CPU limit, runs it in fresh globals on fresh arrays (`sandbox_run._program`), then
writes `{"end": index, "clean": bool}` on its result channel. `clean` is false when
`Guard.changed()` found shared state the program changed; the process then exits, and the helper
forks a fresh one for the next program. A program that times out, crashes, ends the process,
floods its channel or writes past its own end line also ends the process, and costs only its own
verdicts. Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import signal
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING

import sandbox_hidden
import sandbox_run as run
import sandbox_scratch as scratch
from sandbox_channel import parse_results
from sandbox_guard import Guard, watch_hidden, watched
from sandbox_run import CHANNEL, FAILED, MAX_CHANNEL, NOBODY
from sandbox_spawner import GO

if TYPE_CHECKING:
    from sandbox_spawner import Spawner

# GO, the helper's go: blocked (and so waited for) between programs, never during one.
_TGKILL = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)
_LIBC = ctypes.CDLL(None, use_errno=True) if _TGKILL is not None else None


def send_go(pid: int) -> None:
    """GO to the job process's main thread alone (tgkill), never to a thread a program left behind:
    such a thread has GO unblocked (it inherited the program's mask), and a process-directed signal
    may land there, where its default action ends the process. Where tgkill's number is unknown, a
    process-directed kill (the check replaces a process with a thread it can see)."""
    if _LIBC is None or _LIBC.syscall(_TGKILL, pid, pid, GO) != 0:
        os.kill(pid, GO)  # not reaped yet, so it names this process even if it has ended


def end_line(index: int, clean: bool) -> bytes:
    """What the job process writes after a program's verdicts: a newline (ending whatever the program
    left unterminated), then its end line."""
    return b'\n{"end": %d, "clean": %s}\n' % (index, b"true" if clean else b"false")  # no json: a program may patch it


def _job_child(req: dict, first: int, folder: str, wfd: int, out: int, layers: dict[str, bool]) -> None:
    """The job process: confine once, then run codes[first:] one per go signal; never returns."""
    codes, inputs = req["codes"], req["inputs"]
    cpu_s = int(float(req["timeout"])) + 1
    try:
        run._confine(int(req["memory_mb"]), cpu_s * (len(codes) - first), folder, wfd, out, layers)
        guard = Guard(folder)
    except BaseException:  # noqa: BLE001 - a process that cannot be confined must not run anything
        os._exit(FAILED)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    for index in range(first, len(codes)):
        try:
            signal.sigwait({GO})
            guard.reset()
            for stream in guard.streams:  # out with what the last program's finalizers printed in the check
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001 - as after a program
                    pass
            os.ftruncate(1, 0)
            os.lseek(1, 0, os.SEEK_SET)
            used = resource.getrusage(resource.RUSAGE_SELF)
            limit = min(int(used.ru_utime + used.ru_stime) + cpu_s, hard)
            resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {GO})  # the program's mask is a run's: empty
        except BaseException:  # noqa: BLE001
            os._exit(FAILED)
        try:
            run._program(codes[index], inputs)
            left = signal.pthread_sigmask(signal.SIG_BLOCK, {GO})
        except BaseException:  # noqa: BLE001 - the channel was closed or replaced under us
            os._exit(FAILED)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - the program may have replaced or closed them
                pass
        reason = guard.changed() or scratch.changed(folder) or ("the signal mask" if left or signal.sigpending() else "")
        try:
            data = end_line(index, not reason)
            while data:
                data = data[os.write(CHANNEL, data):]
        except BaseException:  # noqa: BLE001
            os._exit(FAILED)
        if reason:
            os._exit(0)
    os._exit(0)


def _until_end(rfd: int, index: int, timeout: float, start: float) -> tuple[bytes, str, bool]:
    """One program's channel bytes up to its end line; how reading ended ("end", "eof", "timeout",
    "flood") and whether the process may run the next program (clean, and nothing after the end line)."""
    buf = b""
    while True:
        for clean in (True, False):
            line = end_line(index, clean)
            at = buf.find(line)
            if at >= 0:
                body = buf[:at + 1]  # the program's lines, and the newline that ended its last one
                body = body[:-1] if body.endswith(b"\n\n") or body == b"\n" else body
                return body, "end", clean and at + len(line) == len(buf) and not _pending(rfd)
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            return buf, "timeout", False
        ready, _, _ = select.select([rfd], [], [], left)
        if not ready:
            continue
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            return buf, "eof", False
        buf += chunk
        if len(buf) > MAX_CHANNEL:
            return buf, "flood", False


def _pending(rfd: int) -> bool:
    ready, _, _ = select.select([rfd], [], [], 0)
    return bool(ready)


def _one_process(req: dict, first: int, layers: dict[str, bool], spawner: Spawner) -> list[dict]:
    """Spawn a job process for codes[first:]; the replies of the programs it ran (at least one)."""
    folder = run.workdir()
    try:
        if layers.get("unprivileged_user"):
            os.chown(folder, NOBODY, NOBODY)
        pid, rfd, out = spawner.spawn(b"j", {**req, "first": first}, folder)
        try:
            return _programs(req, first, pid, rfd, out, spawner)
        finally:
            os.close(out)
    finally:
        run.remove(folder)


def _programs(req: dict, first: int, pid: int, rfd: int, out: int, spawner: Spawner) -> list[dict]:
    """Drive the job process `pid` program by program; its replies once it has ended."""
    inputs, timeout = req["inputs"], float(req["timeout"])
    replies: list[dict] = []
    how, status, start = "end", 0, time.monotonic()
    try:
        for index in range(first, len(req["codes"])):
            start = time.monotonic()
            send_go(pid)
            buf, how, clean = _until_end(rfd, index, timeout, start)
            if how == "eof" and not run._exited(pid, timeout - (time.monotonic() - start)):
                how = "timeout"
            if how != "end":
                break
            results, corrupt = parse_results(buf, len(inputs), complete=True)
            results += [corrupt or run._missing("eof", 0, timeout)] * (len(inputs) - len(results))
            replies.append({"results": results, "seconds": time.monotonic() - start, "output": run._captured(out)})
            if not clean:
                break
    finally:
        status = run.finish(pid, rfd, spawner)
    if how != "end":  # the program that was running when the process ended
        results, corrupt = parse_results(buf, len(inputs), complete=how == "eof")
        if len(results) < len(inputs):
            results += [corrupt or run._missing(how, status, timeout)] * (len(inputs) - len(results))
        replies.append({"results": results, "seconds": time.monotonic() - start, "output": run._captured(out)})
    return replies


def prepare(hidden: list[ModuleType]) -> None:
    """In the helper, once everything is loaded: what every job process's check watches (see
    `watched`), the sandbox's own modules, out of sys.modules, included, and what no module attribute
    reaches (`sandbox_hidden.find`, before the helper freezes its heap)."""
    sandbox_hidden.find()
    watch_hidden(hidden)
    Guard.warm()
    watched()


def freeze_heap() -> None:
    """In the helper, last thing before it is ready: collect, then freeze its heap (`sandbox_hidden.freeze_heap`)."""
    sandbox_hidden.freeze_heap()


def single_threaded() -> bool:
    """Whether the calling process has one thread (state) alone."""
    import threading

    return sandbox_hidden.thread_states() == 1 and threading.active_count() == 1


def run_job(req: dict, layers: dict[str, bool], spawner: Spawner) -> dict:
    """Run every code of `req` in job processes, in order; {"runs": [one run_one-style reply per code]}."""
    codes = req["codes"]
    runs: list[dict] = []
    while len(runs) < len(codes):
        runs.extend(_one_process(req, len(runs), layers, spawner))
    return {"runs": runs}
