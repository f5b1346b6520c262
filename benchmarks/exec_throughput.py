"""Executor throughput: sandboxed runs per second per core against the unsafe floor and the naive way.

Prints a table and a last line `exec_throughput runs_per_s_per_core=<a> ratio_to_floor=<a/b>`.
(a) the project's executor (warm helper, one forked child per run, limits on);
(b) in-process `exec` with no isolation at all (the floor);
(c) a fresh `python` subprocess per run (the naive way), on a sample of the corpus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import corpus  # noqa: E402

CORES = os.cpu_count() or 1


def _chunks(items, n):
    return [items[i::n] for i in range(n)]


def _executor_worker(chunk):
    from arcsynth.workers.sandbox.executor import Executor

    ex = Executor(timeout_s=5.0, memory_mb=1024)
    ex.grade(chunk[0][0], chunk[0][1])  # warm the helper
    start = time.perf_counter()
    for task, code in chunk:
        ex.grade(task, code)
    elapsed = time.perf_counter() - start
    ex.close()
    return len(chunk), elapsed


def _inprocess_worker(chunk):
    import numpy as np

    start = time.perf_counter()
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
    return len(chunk), time.perf_counter() - start


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
    start = time.perf_counter()
    for task, code in chunk:
        req = json.dumps({"code": code, "inputs": [p.input for p in [*task.train, *task.test]]})
        subprocess.run([sys.executable, "-c", NAIVE], input=req, capture_output=True, text=True,
                       timeout=30, env={})
    return len(chunk), time.perf_counter() - start


def measure(fn, items) -> float:
    """Runs per second per core, all cores busy."""
    with ProcessPoolExecutor(CORES) as pool:
        results = list(pool.map(fn, _chunks(items, CORES)))
    runs = sum(n for n, _ in results)
    wall = max(t for _, t in results)
    return runs / wall / CORES


def main() -> None:
    items = corpus()
    a = measure(_executor_worker, items)
    b = measure(_inprocess_worker, items)
    c = measure(_subprocess_worker, items[:: max(1, len(items) // 40)])
    print(f"corpus: {len(items)} candidates, {CORES} cores")
    print(f"{'mode':<34}{'runs/s/core':>12}{'vs floor':>10}")
    for name, v in [("(a) arcsynth executor (isolated)", a), ("(b) in-process exec (unsafe floor)", b),
                    ("(c) fresh python per run (naive)", c)]:
        print(f"{name:<34}{v:>12.1f}{v / b:>10.2f}")
    print(f"exec_throughput runs_per_s_per_core={a:.1f} ratio_to_floor={a / b:.3f}")


if __name__ == "__main__":
    main()
