"""Load: a whole run of 250 and then 1000 tasks through a real local cluster, replay backend.

What it measures, on this machine, in one run:
- jobs per second (a task is two jobs: sample, then execute),
- peak Redis memory (INFO used_memory, sampled every 0.2 s while the run goes),
- peak producer memory (the detached producer's own max RSS, which it records in Redis),
and whether memory stays flat as the run grows (1000 tasks against 250).

    .venv/bin/python benchmarks/load.py [--tasks 250,1000] [--samples 2]

The last line reads `load jobs_per_s=<x> redis_peak_mb=<y> producer_peak_mb=<z>` for the largest run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcsynth.common.data import load_tasks  # noqa: E402
from arcsynth.producer.cluster import LocalCluster  # noqa: E402
from arcsynth.producer.runstate import RunState  # noqa: E402

DATASET = "arc-agi-2/training"  # 1000 tasks
PROGRAMS = ["def transform(grid):\n    return grid[::-1, ::-1]", "def transform(grid):\n    return grid.T",
            "def transform(grid):\n    return [row[:1] for row in grid]"]


def redis_sampler(client: redis.Redis, stop: threading.Event, peak: list[float]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], client.info("memory")["used_memory"] / 2**20)
            stop.wait(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def one_run(cluster: LocalCluster, n_tasks: int, samples: int, out: Path) -> dict:
    client = redis.Redis.from_url(cluster.redis.url)
    before = client.info("memory")["used_memory"] / 2**20
    stop, peak = threading.Event(), [before]
    sampler = redis_sampler(client, stop, peak)
    t0 = time.perf_counter()
    sub = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", DATASET, "--limit", str(n_tasks), "--samples",
                          str(samples), "--out", str(out)], env=cluster.env, capture_output=True, text=True, check=True)
    run_id = sub.stdout.split()[-1]
    subprocess.run([sys.executable, "-m", "arcsynth.producer", "wait", run_id], env=cluster.env, capture_output=True,
                   text=True, check=True)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    info = RunState(redis.Redis.from_url(cluster.redis.url, decode_responses=True), run_id).info()
    lines = sum(1 for _ in open(out / "candidates.jsonl"))
    assert info["state"] == "done" and int(info["done"]) == n_tasks, info
    assert lines == n_tasks * samples, lines
    return {"tasks": n_tasks, "jobs": 2 * n_tasks, "seconds": seconds, "jobs_per_s": 2 * n_tasks / seconds,
            "candidates": lines, "redis_base_mb": before, "redis_peak_mb": peak[0],
            "producer_peak_mb": float(info["rss_peak_mb"]),
            "producer_mb_at_25_100": (float(info["rss_mb_at_25"]), float(info["rss_mb_at_100"]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="250,1000")
    ap.add_argument("--samples", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(x) for x in args.tasks.split(",")]
    work = Path(tempfile.mkdtemp(prefix="arcsynth-load-"))
    replay = work / "programs.jsonl"
    with open(replay, "w") as f:
        for t in load_tasks(DATASET, limit=max(sizes)):
            for code in PROGRAMS[: args.samples]:
                f.write(json.dumps({"task_id": t.id, "text": f"```python\n{code}\n```"}) + "\n")
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay)}
    rows = []
    with LocalCluster(model="replay", kinds=("execute", "inference"), env=env, log_dir=work / "logs") as cluster:
        for n in sizes:
            rows.append(one_run(cluster, n, args.samples, work / f"run-{n}"))
    print(f"{'tasks':>6} {'jobs':>6} {'seconds':>8} {'jobs/s':>7} {'redis peak MB':>14} {'producer peak MB':>17} "
          f"{'producer MB at 25%/100%':>24}")
    for r in rows:
        a, b = r["producer_mb_at_25_100"]
        print(f"{r['tasks']:>6} {r['jobs']:>6} {r['seconds']:>8.1f} {r['jobs_per_s']:>7.1f} {r['redis_peak_mb']:>14.1f} "
              f"{r['producer_peak_mb']:>17.1f} {f'{a:.1f} / {b:.1f}':>24}")
    small, big = rows[0], rows[-1]
    producer_growth = big["producer_peak_mb"] / small["producer_peak_mb"]
    print(f"growth {small['tasks']} -> {big['tasks']} tasks: producer peak x{producer_growth:.2f}, "
          f"redis peak x{big['redis_peak_mb'] / small['redis_peak_mb']:.2f} (flat is ~1.0)")
    print(f"load jobs_per_s={big['jobs_per_s']:.1f} redis_peak_mb={big['redis_peak_mb']:.1f} "
          f"producer_peak_mb={big['producer_peak_mb']:.1f}")


if __name__ == "__main__":
    main()
