"""Faults: a worker SIGKILLed mid-job loses nothing; its job is redelivered and every task is scored once.

A dedicated light cluster (replay backend) with short job limits, so the broker's visibility
timeout (twice the longest limit: 20 s) and the redelivery sweep (every second) fit a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from producer.cluster import LocalCluster, start_worker, stop_process, wait_ready, worker_name
from tests.conftest import SLOW, SLOW_DATASET, _fenced
from tests.waiting import wait_until

SHORT_LIMITS = {"ARCSYNTH_EXECUTE_TIME_LIMIT_S": "10", "ARCSYNTH_INFERENCE_TIME_LIMIT_S": "10",
                "ARCSYNTH_FINETUNE_TIME_LIMIT_S": "10", "ARCSYNTH_REDELIVERY_CHECK_S": "1"}


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    from common.data import load_tasks

    root = tmp_path_factory.mktemp("faults")
    replay = root / "programs.jsonl"
    replay.write_text("".join(json.dumps({"task_id": t.id, "text": _fenced(SLOW)}) + "\n"
                              for t in load_tasks(SLOW_DATASET, limit=12)))
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "8",
           "ARCSYNTH_ARTIFACT_ROOT": str(root / "artifacts"), **SHORT_LIMITS}
    with LocalCluster(model="replay", kinds=("execute", "inference"), env=env, log_dir=root / "logs",
                      ready_timeout=120, worker_args={"execute": ["--concurrency", "1"]}) as cluster:
        second = start_worker("execute", cluster.env, root / "logs" / "execute-2.log", ["--concurrency", "1"], index=2)
        try:
            wait_ready(cluster.app, {worker_name("execute", 2): second},
                       {worker_name("execute", 2): root / "logs" / "execute-2.log"}, 60)
            yield cluster
        finally:
            stop_process(second)


def test_sigkill_of_an_execute_worker_mid_job_loses_nothing(fault_cluster, tmp_path):
    cluster = fault_cluster
    first = worker_name("execute", 1)
    out = tmp_path / "run"
    sub = subprocess.run([sys.executable, "-m", "producer", "submit", SLOW_DATASET, "--limit", "12", "--samples", "1",
                          "--out", str(out)], env=cluster.env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    run_id = sub.stdout.split()[-1]
    inspect = cluster.app.control.inspect(destination=[first], timeout=1.0)

    running: list[str] = []

    def busy() -> bool:
        running[:] = [job["id"] for job in (inspect.active() or {}).get(first, [])]
        return bool(running)

    wait_until(busy, 60, "the first execute worker to be in the middle of a job", interval=0.2)
    victim = cluster.procs[first]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)

    # The second worker takes over the killed job once the visibility timeout passes.
    r = subprocess.run([sys.executable, "-m", "producer", "wait", run_id], env=cluster.env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["status"] for r in records} == {"done"}
    assert len({r["task_id"] for r in records}) == 12  # every task scored exactly once
    per_task = Counter(json.loads(line)["task_id"] for line in (out / "candidates.jsonl").read_text().splitlines())
    assert set(per_task.values()) == {1} and len(per_task) == 12  # no duplicate candidates
    second_log = (cluster.log_dir / "execute-2.log").read_text()
    assert f"arcsynth.execute[{running[0]}] succeeded" in second_log  # the killed job, finished elsewhere


def test_redis_restart_mid_run_with_append_only_persistence(tmp_path):
    """Workers and the producer reconnect; queued and unacknowledged jobs survive in the AOF."""
    from common.data import load_tasks
    from producer.redis_server import RedisServer

    replay = tmp_path / "programs.jsonl"
    replay.write_text("".join(json.dumps({"task_id": t.id, "text": _fenced(SLOW)}) + "\n"
                              for t in load_tasks(SLOW_DATASET, limit=8)))
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "8",
           "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), **SHORT_LIMITS}
    server = RedisServer(password="aof-pw", appendonly=True)
    with LocalCluster(model="replay", kinds=("execute", "inference"), env=env, log_dir=tmp_path / "logs",
                      ready_timeout=120, redis=server) as cluster:
        out = tmp_path / "run"
        sub = subprocess.run([sys.executable, "-m", "producer", "submit", SLOW_DATASET, "--limit", "8", "--samples",
                              "1", "--out", str(out)], env=cluster.env, capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0, sub.stderr
        run_id = sub.stdout.split()[-1]
        wait_until(lambda: len((out / "tasks.jsonl").read_text().splitlines()) >= 2, 60, "two tasks finished")
        server.restart()
        assert len((out / "tasks.jsonl").read_text().splitlines()) < 8  # the restart really was mid-run
        r = subprocess.run([sys.executable, "-m", "producer", "wait", run_id], env=cluster.env, capture_output=True,
                           text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-2000:] + (out / "producer.log").read_text()[-3000:]
        records = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
        assert sorted(r["task_id"] for r in records) == sorted(t.id for t in load_tasks(SLOW_DATASET, limit=8))
        assert {r["status"] for r in records} == {"done"}
        per_task = Counter(json.loads(line)["task_id"] for line in (out / "candidates.jsonl").read_text().splitlines())
        assert set(per_task.values()) == {1} and len(per_task) == 8
