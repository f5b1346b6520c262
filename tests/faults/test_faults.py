"""Faults: workers SIGKILLed mid-job, jobs outlasting the visibility timeout, poison jobs and a
Redis restart; each run ends with every task scored exactly once.

A dedicated light cluster (replay backend, two execute workers) with short limits: the broker
hands out unacknowledged jobs again after 10 s and looks for them every second, so redelivery
fits a test. The tests run in file order; the last one loses `execute-1` for good.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from arcsynth.common.attempts import job_attempts
from arcsynth.common.redis_client import redis_client
from arcsynth.producer.cluster import LocalCluster, start_worker, wait_ready, worker_name
from tests.support import SLOW, SLOW_DATASET, fenced, wait_until

SHORT_LIMITS = {"ARCSYNTH_EXECUTE_TIME_LIMIT_S": "30", "ARCSYNTH_INFERENCE_TIME_LIMIT_S": "30",
                "ARCSYNTH_FINETUNE_TIME_LIMIT_S": "30", "ARCSYNTH_REDELIVERY_CHECK_S": "1", "ARCSYNTH_JOB_LEASE_S": "6"}
# Runs 13 s: longer than the 10 s visibility timeout below, shorter than every limit.
LONG = SLOW.replace("time.sleep(1.0)", "time.sleep(13.0)")


def _task_ids(n: int, start: int = 0) -> list[str]:
    from arcsynth.common.data import load_tasks

    return [t.id for t in load_tasks(SLOW_DATASET, limit=start + n)][start:]


LONG_TASK = 12  # SLOW_DATASET's tasks 0-11 get SLOW, 12 gets LONG, 13-15 SLOW again


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    replay = root / "programs.jsonl"
    ids = _task_ids(16)
    replay.write_text("".join(json.dumps({"task_id": tid, "text": fenced(LONG if i == LONG_TASK else SLOW)}) + "\n"
                              for i, tid in enumerate(ids)))
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "20",
           "ARCSYNTH_ARTIFACT_ROOT": str(root / "artifacts"), "ARCSYNTH_VISIBILITY_TIMEOUT_S": "10", **SHORT_LIMITS}
    with LocalCluster(model="replay", kinds=("execute", "inference"), env=env, log_dir=root / "logs",
                      ready_timeout=120, worker_args={"execute": ["--concurrency", "1"]}) as cluster:
        _restart_second(cluster)  # a second execute worker, stopped with the cluster
        yield cluster


def _restart_second(cluster) -> None:
    name, log = worker_name("execute", 2), cluster.log_dir / "execute-2.log"
    cluster.procs[name] = start_worker("execute", cluster.env, log, ["--concurrency", "1"], index=2)
    wait_ready(cluster.app, {name: cluster.procs[name]}, {name: log}, 60)


def _submit(cluster, out, *args: str) -> str:
    sub = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", SLOW_DATASET, "--samples", "1", "--out", str(out),
                          *args], env=cluster.env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    return sub.stdout.split()[-1]


def _wait(cluster, run_id: str, out) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "wait", run_id], env=cluster.env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:] + (out / "producer.log").read_text()[-3000:]
    return [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]


def _execute_job(cluster, run_id: str, task_id: str) -> str:
    """The id of the execute job the producer recorded for a task (sample and execute are chained)."""
    import redis

    r = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
    found: list[str] = []

    def recorded() -> bool:
        raw = r.hget(f"arcsynth:run:{run_id}:jobs", task_id)
        if raw:
            found.append(json.loads(raw)["ids"][1])
        return bool(found)

    wait_until(recorded, 60, f"the producer to record {task_id}'s job")
    r.close()
    return found[0]


def _job_running_on(cluster, worker: str) -> str:
    """Wait until `worker` is in the middle of a job; return the job's id."""
    inspect = cluster.app.control.inspect(destination=[worker], timeout=1.0, limit=1)
    running: list[str] = []

    def busy() -> bool:
        running[:] = [job["id"] for job in (inspect.active() or {}).get(worker, [])]
        return bool(running)

    wait_until(busy, 60, f"{worker} to be in the middle of a job", interval=0.1)
    return running[0]


def _logs(cluster) -> dict[str, str]:
    return {n: (cluster.log_dir / f"{n}.log").read_text(errors="replace") for n in ("execute", "execute-2")}


def test_a_job_outlasting_the_visibility_timeout_is_not_run_twice(fault_cluster, tmp_path):
    """Redis hands the 13 s job out again after 10 s; that second delivery waits on the job's lease
    and, once the first finished, skips it."""
    cluster, out = fault_cluster, tmp_path / "run"
    task = _task_ids(1, LONG_TASK)[0]
    run_id = _submit(cluster, out, "--tasks", task)
    job = _execute_job(cluster, run_id, task)
    records = _wait(cluster, run_id, out)
    assert [(r["task_id"], r["status"]) for r in records] == [(task, "done")]
    assert len((out / "candidates.jsonl").read_text().splitlines()) == 1
    # The second delivery polls the lease; once the first has finished, it skips the job.
    skipped = f"job {job} already finished; this delivery skips it"
    succeeded = f"arcsynth.execute[{job}] succeeded"
    wait_until(lambda: skipped in (text := "".join(_logs(cluster).values())) and succeeded in text, 30,
               "the second delivery to skip the job")
    logs = "".join(_logs(cluster).values())
    assert f"job {job} is running on execute-" in logs  # it was handed out a second time, waited ...
    assert logs.count(succeeded) == 1  # ... and the job ran once
    status = subprocess.run([sys.executable, "-m", "arcsynth.producer", "status", run_id], env=cluster.env,
                            capture_output=True, text=True, timeout=60).stdout
    assert "workers lost" not in status  # no worker died: nothing to report


def test_a_job_running_when_its_run_times_out_leaves_nothing_behind(fault_cluster, tmp_path):
    """The run times out while its 13 s job runs: the producer gives the job up (its lease says
    `cancelled`), and the job, ending after the run, drops its payload and result, which no producer
    would ever collect (they stayed for good). The delivery Redis hands out again after 10 s does not
    run it either."""
    from celery.result import AsyncResult

    cluster, out = fault_cluster, tmp_path / "run"
    payloads = Path(cluster.env["ARCSYNTH_ARTIFACT_ROOT"]) / "payloads"
    before = set(payloads.iterdir()) if payloads.exists() else set()
    task = _task_ids(1, LONG_TASK)[0]
    run_id = _submit(cluster, out, "--tasks", task, "--timeout", "8")
    job = _execute_job(cluster, run_id, task)
    records = _wait(cluster, run_id, out)
    assert [(r["task_id"], r["status"], r["reason"]) for r in records] == [(task, "failed", "timed out")]
    dropped = f"job {job} ended after its run gave it up: its payload and result are dropped"
    wait_until(lambda: dropped in "".join(_logs(cluster).values()), 30, "the job to drop what it made")
    assert "".join(_logs(cluster).values()).count(f"arcsynth.execute[{job}] succeeded") == 1  # ran once
    assert AsyncResult(job, app=cluster.app).state == "PENDING"  # its result is gone
    assert (set(payloads.iterdir()) if payloads.exists() else set()) == before


def test_a_poison_job_fails_with_the_reason_after_bounded_attempts_and_the_run_completes(fault_cluster, tmp_path):
    """Whenever the poison task's job starts, its worker process is SIGKILLed (as the OOM killer
    would); after 3 attempts the job fails with the reason and the other tasks finish."""
    cluster, out = fault_cluster, tmp_path / "run"
    ids = _task_ids(4, LONG_TASK)
    poison = ids[0]
    run_id = _submit(cluster, out, "--tasks", ",".join(ids))
    job = _execute_job(cluster, run_id, poison)
    workers = [worker_name("execute", 1), worker_name("execute", 2)]
    inspect = cluster.app.control.inspect(destination=workers, timeout=1.0, limit=2)
    killed: list[int] = []
    r = redis_client(cluster.redis.url, outage_s=0)

    def kill_when_running() -> bool:
        attempts = job_attempts(r, [job])[job][0]
        for jobs in (inspect.active() or {}).values():
            for j in jobs:
                pid = j.get("worker_pid")
                # Kill once the attempt has begun (counted), never the same process twice.
                if j["id"] == job and pid and pid not in killed and attempts == len(killed) + 1:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        return (out / "tasks.jsonl").exists() and poison in (out / "tasks.jsonl").read_text()

    try:
        wait_until(kill_when_running, 180, "the poison task to end", interval=0.1)
    finally:
        r.close()
    records = {r["task_id"]: r for r in _wait(cluster, run_id, out)}
    assert len(killed) == 3
    assert records[poison]["status"] == "failed"
    assert "PoisonJob: its worker died during each of its 3 attempts" in records[poison]["reason"]
    assert {records[t]["status"] for t in ids[1:]} == {"done"} and len(records) == 4
    per_task = Counter(json.loads(line)["task_id"] for line in (out / "candidates.jsonl").read_text().splitlines())
    assert per_task == {t: 1 for t in ids[1:]}
    # Both execute workers survive (only their pool processes died) and serve on.
    assert len(cluster.app.control.ping(destination=workers, timeout=2.0, limit=2)) == 2


def test_sigterm_stops_a_worker_gracefully_after_its_current_job(fault_cluster, tmp_path):
    """Celery's warm shutdown: execute-2 stops taking jobs, finishes the one it runs, and exits;
    what it had reserved goes back to the queue. It is started again for the next test."""
    cluster, out = fault_cluster, tmp_path / "run"
    second = worker_name("execute", 2)
    run_id = _submit(cluster, out, "--limit", "6")
    job = _job_running_on(cluster, second)
    proc = cluster.procs[second]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # a clean exit, not a kill
    log = (cluster.log_dir / "execute-2.log").read_text()
    assert f"arcsynth.execute[{job}] succeeded" in log  # it finished the job it had
    records = _wait(cluster, run_id, out)
    assert len(records) == 6 and {r["status"] for r in records} == {"done"}
    per_task = Counter(json.loads(line)["task_id"] for line in (out / "candidates.jsonl").read_text().splitlines())
    assert set(per_task.values()) == {1} and len(per_task) == 6
    _restart_second(cluster)


def test_sigkill_of_an_execute_worker_mid_job_loses_nothing(fault_cluster, tmp_path):
    """execute-1 dies for good mid-job: the job goes to execute-2 and the run's status says so."""
    cluster = fault_cluster
    first = worker_name("execute", 1)
    out = tmp_path / "run"
    run_id = _submit(cluster, out, "--limit", "12")
    job = _job_running_on(cluster, first)
    victim = cluster.procs[first]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)

    # The second worker takes over the killed job once the visibility timeout passes.
    records = _wait(cluster, run_id, out)
    assert len(records) == 12 and {r["status"] for r in records} == {"done"}
    assert len({r["task_id"] for r in records}) == 12  # every task scored exactly once
    per_task = Counter(json.loads(line)["task_id"] for line in (out / "candidates.jsonl").read_text().splitlines())
    assert set(per_task.values()) == {1} and len(per_task) == 12  # no duplicate candidates
    # The killed job, finished elsewhere (the worker logs it just after storing the result).
    wait_until(lambda: f"arcsynth.execute[{job}] succeeded" in (cluster.log_dir / "execute-2.log").read_text(),
               30, "execute-2 to log the job it took over")
    status = subprocess.run([sys.executable, "-m", "arcsynth.producer", "status", run_id], env=cluster.env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert (f"jobs handed to another worker after theirs died: 1; workers lost mid-job: {first} (not answering)"
            in status.stdout)


def test_redis_restart_mid_run_with_append_only_persistence(tmp_path):
    """Workers and the producer reconnect; queued and unacknowledged jobs survive in the AOF."""
    from arcsynth.common.data import load_tasks
    from arcsynth.producer.redis_server import RedisServer

    replay = tmp_path / "programs.jsonl"
    replay.write_text("".join(json.dumps({"task_id": t.id, "text": fenced(SLOW)}) + "\n"
                              for t in load_tasks(SLOW_DATASET, limit=8)))
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "8",
           "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), **SHORT_LIMITS}
    server = RedisServer(password="aof-pw", appendonly=True)
    with LocalCluster(model="replay", kinds=("execute", "inference"), env=env, log_dir=tmp_path / "logs",
                      ready_timeout=120, redis=server) as cluster:
        out = tmp_path / "run"
        run_id = _submit(cluster, out, "--limit", "8")
        wait_until(lambda: len((out / "tasks.jsonl").read_text().splitlines()) >= 2, 60, "two tasks finished")
        server.restart()
        assert len((out / "tasks.jsonl").read_text().splitlines()) < 8  # the restart really was mid-run
        records = _wait(cluster, run_id, out)
        assert sorted(r["task_id"] for r in records) == sorted(t.id for t in load_tasks(SLOW_DATASET, limit=8))
        assert {r["status"] for r in records} == {"done"}
        per_task = Counter(json.loads(line)["task_id"] for line in (out / "candidates.jsonl").read_text().splitlines())
        assert set(per_task.values()) == {1} and len(per_task) == 8
