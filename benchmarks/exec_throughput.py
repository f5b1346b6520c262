"""Executor throughput: sandboxed runs per second per core against the unsafe floor and the naive way.

Prints a table, then `exec_throughput runs_per_s_per_core=<a> ratio_to_floor=<a/b>` and, last,
`exec_throughput_job runs_per_s_per_core=<j> ratio_to_floor=<j/b>`, with CPU milliseconds per run.
(a) the project's executor in run isolation (warm helper, one forked, confined child per run);
(j) the executor in job isolation (`grade_many`: one confined process runs the programs of a task);
(b) in-process `exec` with no isolation at all (the floor);
(c) a fresh `python` subprocess per run (the naive way), on a sample of the corpus.
Runs/s per core use all cores at once; CPU ms per run count the executor, its helper and runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import corpus  # noqa: E402

CORES = os.cpu_count() or 1


def _tree_cpu(pid: int) -> float:
    """CPU seconds of the live process `pid`, its reaped children, and so on down its live children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        children = []
    return total + sum(_tree_cpu(int(c)) for c in children)


def _cpu(helper: int | None = None) -> float:
    """CPU seconds of this process, its reaped children and, if given, the live helper `helper` with its
    spawner and their reaped runs."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return total + (_tree_cpu(helper) if helper is not None else 0.0)


def _executor_worker(chunk, isolation="run"):
    from arcsynth.workers.sandbox.executor import Executor

    ex = Executor(timeout_s=5.0, memory_mb=1024, isolation=isolation)
    ex.grade(chunk[0][0], chunk[0][1])  # warm the helper
    helper = ex._proc.pid if ex._proc is not None else None
    cpu, start = _cpu(helper), time.perf_counter()
    if isolation == "job":
        by_task: dict = {}
        for task, code in chunk:
            by_task.setdefault(task.id, (task, []))[1].append(code)
        for task, codes in by_task.values():
            ex.grade_many(task, codes)
    else:
        for task, code in chunk:
            ex.grade(task, code)
    elapsed = time.perf_counter() - start
    cpu = _cpu(helper) - cpu  # the helper's start-up is not counted
    ex.close()
    return len(chunk), elapsed, cpu


def _job_worker(chunk):
    return _executor_worker(chunk, "job")


def _inprocess_worker(chunk):
    import numpy as np

    cpu, start = _cpu(), time.perf_counter()
    for task, code in chunk:
        scope: dict = {}
        try:
            exec(compile(code, "<c>", "exec"), scope)
            for pair in [*task.train, *task.test]:
                try:
                    out = scope["transform"](np.array(pair.input))
                    np.asarray(out).tolist()
                except Exception:  # noqa: BLE001
                    pass
        except Exception:  # noqa: BLE001
            pass
    return len(chunk), time.perf_counter() - start, _cpu() - cpu


NAIVE = """
import json, sys
import numpy as np
req = json.loads(sys.stdin.read())
scope = {}
exec(req["code"], scope)
outs = []
for g in req["inputs"]:
    try:
        outs.append(np.asarray(scope["transform"](np.array(g))).tolist())
    except Exception as e:
        outs.append(str(e))
print(json.dumps(outs))
"""


def _subprocess_worker(chunk):
    cpu, start = _cpu(), time.perf_counter()
    for task, code in chunk:
        req = json.dumps({"code": code, "inputs": [p.input for p in [*task.train, *task.test]]})
        subprocess.run([sys.executable, "-c", NAIVE], input=req, capture_output=True, text=True,
                       timeout=30, env={})
    return len(chunk), time.perf_counter() - start, _cpu() - cpu


def _by_task(items, n):
    """Split the corpus over `n` workers by task, so job isolation sees each task's programs together."""
    ids = sorted({t.id for t, _ in items})
    return [[(t, c) for t, c in items if ids.index(t.id) % n == i] for i in range(n)]


def measure(fn, items) -> tuple[float, float]:
    """Runs per second per core, all cores busy; and CPU milliseconds per run."""
    with ProcessPoolExecutor(CORES) as pool:
        results = list(pool.map(fn, _by_task(items, CORES)))
    runs = sum(n for n, _, _ in results)
    wall = max(t for _, t, _ in results)
    return runs / wall / CORES, sum(c for _, _, c in results) / runs * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="interleave the modes this many times; medians (default 5)")
    parser.add_argument("--no-naive", action="store_true", help="skip (c), the slowest")
    args = parser.parse_args()
    items = corpus()
    modes = {"a": _executor_worker, "j": _job_worker, "b": _inprocess_worker}
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in modes}
    for _ in range(args.repeat):
        for key, fn in modes.items():
            got[key].append(measure(fn, items))
    med = {k: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v)) for k, v in got.items()}
    if not args.no_naive:
        med["c"] = measure(_subprocess_worker, items[:: max(1, len(items) // 40)])
    floor = med["b"][0]
    print(f"corpus: {len(items)} candidates, {CORES} cores, medians of {args.repeat}")
    print(f"{'mode':<38}{'runs/s/core':>12}{'vs floor':>10}{'CPU ms/run':>12}")
    names = {"a": "(a) arcsynth executor, run isolation", "j": "(j) arcsynth executor, job isolation",
             "b": "(b) in-process exec (unsafe floor)", "c": "(c) fresh python per run (naive)"}
    for key, name in names.items():
        if key in med:
            v, ms = med[key]
            print(f"{name:<38}{v:>12.1f}{v / floor:>10.2f}{ms:>12.2f}")
    a, j = med["a"][0], med["j"][0]
    print(f"exec_throughput runs_per_s_per_core={a:.1f} ratio_to_floor={a / floor:.3f}")
    print(f"exec_throughput_job runs_per_s_per_core={j:.1f} ratio_to_floor={j / floor:.3f}")


if __name__ == "__main__":
    main()
