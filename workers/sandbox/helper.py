"""Warm helper that runs untrusted programs, one forked child per run.

Started by the executor as `python -I helper.py` with an empty environment, so nothing
it or its children hold in memory knows the broker, passwords or the project's code. It imports
numpy once; each run forks (fast, already warm), applies limits, runs `transform` on every input
and streams one JSON line per input back through a pipe. Requests and replies are JSON lines on
stdin/stdout. This file imports nothing from the project on purpose.
"""

import ctypes
import json
import os
import platform
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time

import numpy as np  # noqa: F401  (preloaded for programs)

# What generated programs import, loaded once here so every forked run starts warm (and so runs,
# which drop to an unprivileged user, never need to read the interpreter's files).
PRELOAD = ("collections", "itertools", "functools", "math", "copy", "re", "heapq", "random",
           "typing", "dataclasses", "operator", "string", "statistics", "fractions", "bisect",
           "queue", "enum", "abc", "numpy.linalg", "numpy.fft", "numpy.random",
           # Loaded so hostile programs meet the real guards (seccomp, namespaces), not a missing file.
           "socket", "encodings.idna", "subprocess", "threading", "ctypes", "signal", "shutil", "tempfile")

MAX_SIDE = 30
NOBODY = 65534
CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
MS_RDONLY, MS_BIND, MS_REC, MS_PRIVATE = 1, 4096, 16384, 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, fstype, flags, data):
    def enc(v):
        return (v.encode() if isinstance(v, str) else v)
    return _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) == 0


def isolate_helper(hide):
    """Put this helper (and so every run) in its own network and mount namespaces.

    Returns which layers are active. No network: a fresh network namespace has only a loopback
    device, and it is down. In the mount namespace /tmp, /var/tmp and /dev/shm are fresh tmpfs
    that only root may write (each run gets its own directory there), and the paths in `hide`
    (the worker's code, its .env) are covered by empty read-only mounts.
    """
    layers = {"network_namespace": False, "mount_namespace": False, "seccomp": False,
              "unprivileged_user": False, "rlimits": True}
    if os.geteuid() == 0:
        if _libc.unshare(CLONE_NEWNET | CLONE_NEWNS) == 0:
            layers["network_namespace"] = True
            if _mount("none", "/", None, MS_REC | MS_PRIVATE, None):
                ok = all(_mount("tmpfs", d, "tmpfs", 0, "mode=0755,size=256m")
                         for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d))
                for path in hide:
                    if os.path.isdir(path):
                        ok &= _mount("tmpfs", path, "tmpfs", MS_RDONLY, "mode=0000,size=4k")
                    elif os.path.isfile(path):
                        ok &= _mount("/dev/null", path, None, MS_BIND, None)
                layers["mount_namespace"] = ok
        layers["unprivileged_user"] = True
    elif _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        layers["network_namespace"] = True
    layers["seccomp"] = platform.machine() == "x86_64"
    return layers


# seccomp: a classic-BPF filter, written out because libseccomp's Python bindings are rarely
# installed. x86_64 syscall numbers; other architectures run without this layer.
_SYS = {"socket": 41, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62,
        "ptrace": 101, "mount": 165, "tkill": 200, "tgkill": 234, "unshare": 272, "setns": 308,
        "process_vm_writev": 311, "execveat": 322, "clone3": 435}
_AUDIT_ARCH_X86_64 = 0xC000003E
_CLONE_THREAD = 0x00010000
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_RET_ERRNO = 0x00050000
_LD_W_ABS, _JEQ_K, _JSET_K, _RET_K = 0x20, 0x15, 0x45, 0x06


def _seccomp_program(own_pid):
    """Deny new processes, exec, network sockets, signals to others, ptrace and namespace tricks."""
    eperm, eacces, enosys = _RET_ERRNO | 1, _RET_ERRNO | 13, _RET_ERRNO | 38
    prog = [
        (_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64), (_RET_K, 0, 0, _RET_KILL),
        (_LD_W_ABS, 0, 0, 0),
    ]
    def deny(nr, ret):
        prog.extend([(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, ret)])
    deny(_SYS["socket"], eacces)
    deny(_SYS["clone3"], enosys)  # glibc then falls back to clone, checked below
    for name in ("fork", "vfork", "execve", "execveat", "ptrace", "mount", "unshare", "setns",
                 "process_vm_writev"):
        deny(_SYS[name], eperm)
    # clone: threads only.
    prog.extend([(_JEQ_K, 0, 4, _SYS["clone"]), (_LD_W_ABS, 0, 0, 16),
                 (_JSET_K, 1, 0, _CLONE_THREAD), (_RET_K, 0, 0, eperm), (_RET_K, 0, 0, _RET_ALLOW)])
    # kill/tkill/tgkill: only this process itself (or its own group, 0).
    for name in ("kill", "tkill", "tgkill"):
        prog.extend([(_JEQ_K, 0, 5, _SYS[name]), (_LD_W_ABS, 0, 0, 16),
                     (_JEQ_K, 2, 0, own_pid), (_JEQ_K, 1, 0, 0), (_RET_K, 0, 0, eperm),
                     (_RET_K, 0, 0, _RET_ALLOW)])
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp(own_pid):
    prog = _seccomp_program(own_pid)
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(prog), ctypes.addressof(buf))
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if _libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter refused")


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
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails instead of killing
    os.chdir(workdir)
    stdin = os.open(os.devnull, os.O_RDONLY)
    captured = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(stdin, 0)
    os.dup2(captured, 1)
    os.dup2(captured, 2)
    os.close(stdin)
    os.close(captured)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered: kept even on os._exit
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    if LAYERS.get("unprivileged_user"):
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))
    if LAYERS.get("seccomp"):
        _install_seccomp(os.getpid())
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
    _flush_std()
    os._exit(0)


def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or closed them
            pass


def run_one(req):
    inputs = req["inputs"]
    timeout = float(req["timeout"])
    workdir = tempfile.mkdtemp(prefix="arcsynth-run-")
    if LAYERS.get("unprivileged_user"):
        os.chown(workdir, NOBODY, NOBODY)
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
    try:
        with open(os.path.join(workdir, ".output"), "rb") as f:
            output = f.read(4096).decode("utf-8", "replace")
    except OSError:
        output = ""
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
    return {"results": results[: len(inputs)], "seconds": time.monotonic() - start, "output": output}


LAYERS = {}


def preload(names):
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def load_dsl(paths):
    """Make operators' DSL files importable by their file name (BARC's `from common import *`).

    Listed files load in order, so a later one may import an earlier one.
    """
    import importlib.util

    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    preload(PRELOAD)
    load_dsl(config.get("dsl", []))
    LAYERS.update(isolate_helper(config.get("hide", [])))
    # Everything loaded so far is shared with every forked run; frozen, the collector never walks
    # (and so never copies) those pages in a child.
    import gc

    gc.collect()
    gc.freeze()
    sys.stdout.write(json.dumps({"layers": LAYERS}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        reply = run_one(req)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
