"""Warm helper that runs untrusted programs, one forked child per run.

Started by the executor as `python -I helper.py CONFIG` with an empty environment, so nothing it
or its children hold in memory knows the broker, passwords or the project's code. CONFIG is a
JSON object: `dsl` (paths of DSL module files), `packages` (top-level packages programs may
import beside the standard library; numpy is always one), `hide` (what the fallback view
covers) and `minimal_root` (false: the fallback view even where the minimal root is possible).
It imports numpy, the usual standard-library modules and the DSL modules once, isolates itself
once (`sandbox_isolation`: namespaces and the minimal root, inherited by every run at no cost per
run), forks its spawner (`sandbox_spawner`: the process that forks every run from the helper's
image as it was when ready), then serves: for each request the spawner forks a confined child
(`sandbox_run`), or, for a job, confined job processes that run its programs in turn
(`sandbox_job`). If the spawner dies, the helper exits with status 4.

DSL modules load in the listed order, each importable under its file name (BARC's
`from common import *`): a later one may import an earlier one, never the reverse. A module that
is not a `.py` file, whose name is taken (by another DSL module, the standard library or a loaded
package), or whose import fails stops the helper.

Protocol: JSON lines, requests on stdin and replies on stdout. The first line the helper writes
is either `{"layers": {name: active}, "why": {name: reason}}` (ready), or
`{"error": "dsl", "module": path, "message": one line}` / `{"error": "startup", "message": ...}`,
after which it exits with status 3. Anything else printed (by a DSL module, a warning) goes to
stderr, never into the protocol. This file and its `sandbox_*` siblings import nothing from the
project; the siblings are found by putting this folder on sys.path for the time of their import.
"""

import os
import sys

STARTUP_MODULES = frozenset(sys.modules)  # what `site` loaded: never offered to programs
HERE = os.path.dirname(os.path.abspath(__file__))
AT_FORK: list[dict] = []  # every os.register_at_fork call made while the helper loads (see sandbox_run.prepare)
_register_at_fork = os.register_at_fork


def _recorded_register_at_fork(**handlers: object) -> None:
    _register_at_fork(**handlers)
    AT_FORK.append({k: v for k, v in handlers.items() if v is not None})


os.register_at_fork = _recorded_register_at_fork

import json  # noqa: E402
import signal  # noqa: E402
import traceback  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import IO  # noqa: E402

# What generated programs import, loaded once here so every forked run starts warm. Not numpy.random
# or numpy.fft, which few programs use: loaded, they add about 80 mappings and 1.5 MB that every
# run's fork copies and exit tears down; a program that uses them imports them itself.
PRELOAD = ("collections", "itertools", "functools", "math", "copy", "re", "heapq", "random",
           "typing", "dataclasses", "operator", "string", "statistics", "fractions", "bisect",
           "queue", "enum", "abc", "numpy.linalg",
           # Loaded so hostile programs meet the real guards (seccomp, namespaces), not a missing file.
           "socket", "encodings.idna", "subprocess", "threading", "ctypes", "signal", "shutil", "tempfile")
STARTUP_FAILED = 3
SPAWNER_GONE = 4


def one_line(text: str, cap: int = 300) -> str:
    return " ".join(text.split())[:cap].encode("utf-8", "replace").decode("utf-8")


def _siblings() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    sys.path.insert(0, HERE)
    try:
        import sandbox_isolation
        import sandbox_job
        import sandbox_run
        import sandbox_spawner
    finally:
        sys.path.remove(HERE)
    return sandbox_isolation, sandbox_run, sandbox_job, sandbox_spawner


def preload(names: tuple[str, ...]) -> None:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module only makes runs slower
            pass


def load_packages(names: list[str]) -> dict | None:
    """Import the packages offered to programs; None, or the report of the first that does not import."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - a package's import may raise anything
            return {"error": "startup", "message": one_line(f"the package {name} offered to programs does not "
                                                            f"import: {type(exc).__name__}: {exc}")}
    return None


def _dsl_failure(path: str, exc: BaseException, later: dict[str, str]) -> dict:
    """The one-line report of a DSL module whose import raised `exc`."""
    if isinstance(exc, SyntaxError) and exc.filename == path:
        text = f"SyntaxError: {exc.msg} (line {exc.lineno})"
    else:
        try:
            text = f"{type(exc).__name__}: {exc}"
        except BaseException:  # noqa: BLE001 - its __str__ may raise
            text = type(exc).__name__
        lines = [n for f, n in traceback.walk_tb(exc.__traceback__) if f.f_code.co_filename == path]
        if lines:
            text += f" (line {lines[-1]})"
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing in later:
        text += (f"; DSL modules load in the listed order, and {missing} ({later[missing]}) is listed after it:"
                 " list it first")
    return {"error": "dsl", "module": path, "message": one_line(text)}


def load_dsl(paths: list[str]) -> dict | None:
    """Import the DSL modules in order; None, or the report of the first one that failed."""
    import importlib.util

    names = {os.path.splitext(os.path.basename(p))[0]: p for p in reversed(paths)}
    seen: dict[str, str] = {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        later = {n: p for n, p in names.items() if n not in seen and n != name}
        reason = ""
        if not path.endswith(".py"):
            reason = "not a Python source file (.py)"
        elif not name.isidentifier():
            reason = f"its file name ({name}) is not a module name"
        elif name in seen:
            reason = f"another DSL module has the same name: {seen[name]}"
        elif name in sys.modules or name in sys.stdlib_module_names:
            reason = f"its name would hide the module {name} that programs may import"
        if reason:
            return {"error": "dsl", "module": path, "message": one_line(reason)}
        seen[name] = path
        print(f"arcsynth sandbox: loading DSL module {path}", file=sys.stderr, flush=True)
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - operators' code may raise anything, even SystemExit
            sys.modules.pop(name, None)
            traceback.print_exc()
            return _dsl_failure(path, exc, later)
    return None


def offered(packages: list[str], dsl: list[str], rootfs: ModuleType) -> list[str]:
    """Top-level packages runs may import: `packages`, and what the helper and DSL modules loaded
    from outside the standard library (so their lazy imports still work in the minimal root)."""
    std = rootfs.stdlib_paths()
    sites = rootfs.site_dirs()
    skip = {os.path.realpath(p) for p in dsl}
    inside = rootfs.inside
    names = set(packages)
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if name in STARTUP_MODULES or not isinstance(file, str):
            continue
        real = os.path.realpath(file)
        if real in skip or inside(real, HERE):
            continue
        if any(inside(real, s) for s in sites) or not any(inside(real, s) for s in std):
            names.add(name.split(".")[0])
    return sorted(n for n in names if n in sys.modules)


def hide_siblings() -> list[ModuleType]:
    """Take this folder's modules (`sandbox_*`) out of sys.modules, so a program cannot import them
    (say, to switch off job isolation's check); the helper keeps its own references. Returns them:
    job isolation's check still watches them (a program can reach one through a function's globals)."""
    here = os.path.realpath(HERE)
    hidden = []
    for name, mod in list(sys.modules.items()):
        if name != "__main__" and os.path.dirname(os.path.realpath(getattr(mod, "__file__", None) or "/")) == here:
            hidden.append(sys.modules.pop(name))
    return hidden


def _say(proto: IO[str], message: dict) -> None:
    proto.write(json.dumps(message) + "\n")
    proto.flush()


def serve(proto: IO[str], run: ModuleType, job: ModuleType, spawner: ModuleType, layers: dict[str, bool]) -> None:
    """Start the spawner, then answer requests until stdin closes; a request that cannot be run gets an
    empty reply; if the spawner is gone, the helper exits (the executor starts a new one).

    A request with `code` is one run (`sandbox_run.run_one`); one with `codes` is one job
    (`sandbox_job.run_job`: {"runs": [a run's reply per code]}).
    """

    def spawned(kind: bytes, req: dict, folder: str, wfd: int, out: int) -> None:
        if kind == b"j":
            job._job_child(req, req["first"], folder, wfd, out, layers)
        else:
            run._child(req, folder, wfd, out, layers)

    forks = spawner.Spawner.start(spawned)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = job.run_job(req, layers, forks) if "codes" in req else run.run_one(req, layers, forks)
        except spawner.SpawnerGone as exc:
            print(f"arcsynth sandbox: {exc}", file=sys.stderr, flush=True)
            os._exit(SPAWNER_GONE)
        except Exception as exc:  # noqa: BLE001 - the executor's request was malformed
            reply = {"results": [], "runs": [], "seconds": 0.0, "output": "", "error": one_line(repr(exc))}
        _say(proto, reply)


# Ignored by every Python process from its start (SIGPIPE, SIGXFSZ), and by the helper (SIGINT: a
# terminal's ^C is for the executor's process, which closes the helper).
_IGNORED = frozenset({signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT})


def reset_signals() -> None:
    """Give the helper, and so every run, the same signals whatever started the executor's process.

    A process keeps its signal mask and ignored signals through fork and exec: a thread with a
    signal blocked (`perf record` blocks SIGWINCH), `nohup` (SIGHUP ignored), a shell's background
    job (SIGINT and SIGQUIT ignored). Here nothing is blocked, and every signal has its default
    action but `_IGNORED`. (Timers are not inherited: fork clears them.)
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in signal.valid_signals():
        if sig in _IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        elif signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)


def main() -> None:
    """Start (load, isolate, say hello or why not on the first line), then serve until stdin closes."""
    reset_signals()
    os.umask(0o022)
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    try:
        config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
        isolation, run, job, spawner = _siblings()
        packages = ["numpy", *config.get("packages", [])]
        preload(PRELOAD)
        failure = load_packages(packages) or load_dsl(list(config.get("dsl", [])))
        if failure is None:
            names = offered(packages, config.get("dsl", []), isolation.rootfs)
            layers, why = isolation.isolate(names, config.get("dsl", []), config.get("hide", []),
                                            minimal=config.get("minimal_root", True))
    except BaseException as exc:  # noqa: BLE001 - say why, whatever it is
        traceback.print_exc()
        failure = {"error": "startup", "message": one_line(f"{type(exc).__name__}: {exc}")}
    if failure is not None:
        _say(proto, failure)
        sys.stderr.flush()
        os._exit(STARTUP_FAILED)
    job.prepare(hide_siblings())
    os.register_at_fork = _register_at_fork
    run.prepare(layers, AT_FORK, job.single_threaded(), isolation.scratch(layers))
    # Everything loaded so far is shared with every forked run; frozen, the collector never walks
    # (and so never copies) those pages in a child (`gc.collect(); gc.freeze()`, with job isolation's canary).
    job.freeze_heap()
    _say(proto, {"layers": layers, "why": why})
    serve(proto, run, job, spawner, layers)


if __name__ == "__main__":
    main()
