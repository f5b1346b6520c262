"""Warm helper that runs untrusted programs, one forked child per run.

Started by the executor as `python -I sandbox_helper.py` with an empty environment, so nothing
it or its children hold in memory knows the broker, passwords or the project's code. It imports
numpy once; each run forks (fast, already warm), applies limits, runs `transform` on every input
and streams one JSON line per input back through a pipe. Requests and replies are JSON lines on
stdin/stdout. This file imports nothing from the project on purpose.
"""

import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time

import numpy as np  # noqa: F401  (preloaded for programs)

MAX_SIDE = 30


def _grid(value):
    """Validate a program's output as an ARC grid; return (grid, None) or (None, reason)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 2:
            return None, f"array with {value.ndim} dimensions"
        if value.size > MAX_SIDE * MAX_SIDE:
            return None, f"array of shape {value.shape} is larger than 30x30"
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_SIDE:
        return None, "not a list of 1..30 rows"
    rows = []
    width = None
    for row in value:
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if not isinstance(row, (list, tuple)) or not 1 <= len(row) <= MAX_SIDE:
            return None, "a row is not a list of 1..30 cells"
        if width is None:
            width = len(row)
        elif len(row) != width:
            return None, "rows have different lengths"
        cells = []
        for c in row:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
                return None, f"cell {c!r:.20} is not an int"
            if not 0 <= int(c) <= 9:
                return None, f"colour {int(c)} outside 0..9"
            cells.append(int(c))
        rows.append(cells)
    return rows, None


def _die_with_parent():
    """Ask the kernel to SIGKILL this process when the helper dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _child(code, inputs, memory_mb, cpu_s, workdir, wfd):
    os.setpgid(0, 0)
    _die_with_parent()
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    out = os.fdopen(wfd, "w", buffering=1)

    def emit(**kw):
        out.write(json.dumps(kw) + "\n")

    scope = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(compile(code, "<candidate>", "exec"), scope)
    except MemoryError:
        emit(error="memory", message="MemoryError while loading the program", load=True)
        os._exit(0)
    except SyntaxError as e:
        emit(error="syntax_error", message=f"line {e.lineno}: {e.msg}", load=True)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - untrusted code may raise anything
        emit(error="exception", message=f"{type(e).__name__}: {e}"[:500], load=True)
        os._exit(0)
    fn = scope.get("transform")
    if not callable(fn):
        emit(error="no_transform", message="the program defines no function transform", load=True)
        os._exit(0)
    for grid in inputs:
        try:
            value = fn(np.array(grid, dtype=np.int64))
            result, reason = _grid(value)
            if reason:
                emit(error="invalid_output", message=reason)
            else:
                emit(output=result)
        except MemoryError:
            emit(error="memory", message="MemoryError")
        except RecursionError:
            emit(error="exception", message="RecursionError: maximum recursion depth exceeded")
        except BaseException as e:  # noqa: BLE001
            emit(error="exception", message=f"{type(e).__name__}: {e}"[:500])
    out.flush()
    os._exit(0)


def run_one(req):
    inputs = req["inputs"]
    timeout = float(req["timeout"])
    workdir = tempfile.mkdtemp(prefix="arcsynth-run-")
    rfd, wfd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            _child(req["code"], inputs, int(req["memory_mb"]), int(timeout) + 1, workdir, wfd)
        finally:
            os._exit(1)
    os.close(wfd)
    buf = b""
    timed_out = False
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([rfd], [], [], left)
        if not ready:
            continue
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            break
        buf += chunk
        if len(buf) > 4 << 20:
            break
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    os.close(rfd)
    shutil.rmtree(workdir, ignore_errors=True)
    results = []
    for line in buf.decode("utf-8", "replace").splitlines():
        try:
            results.append(json.loads(line))
        except ValueError:
            break
    if results and results[0].pop("load", False):
        results = [results[0]] * len(inputs)  # the program failed before any input ran
    if len(results) < len(inputs):
        if timed_out:
            missing = {"error": "timeout", "message": f"no result within {timeout:g} s"}
        elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            missing = {"error": "timeout", "message": "CPU time limit exceeded"}
        elif os.WIFSIGNALED(status):
            missing = {"error": "crashed", "message": f"killed by signal {os.WTERMSIG(status)}"}
        else:
            missing = {"error": "crashed", "message": "the program ended the process"}
        results += [missing] * (len(inputs) - len(results))
    return {"results": results[: len(inputs)], "seconds": time.monotonic() - start}


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for line in sys.stdin:
        req = json.loads(line)
        reply = run_one(req)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
