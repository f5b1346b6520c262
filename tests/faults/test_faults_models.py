"""Faults on the model workers: SIGKILL of the inference worker mid-generation (vLLM on CPU) and
of the fine-tune worker mid-training (peft); both jobs are handed out again after the restart and
the search-and-learn run ends with its one task scored once and no duplicate candidates.

A cluster of its own (Redis, one worker of each kind, SmolLM2) whose broker hands out an
unacknowledged job again after 15 s; jobs that run longer meanwhile are protected by their lease.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import psutil
import pytest

from arcsynth.common.attempts import job_attempts
from arcsynth.common.redis_client import redis_client
from arcsynth.producer.cluster import LocalCluster, start_worker, wait_ready, worker_name
from tests.support import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def model_cluster(smollm2, artifact_root, tmp_path_factory):
    env = {"ARCSYNTH_ARTIFACT_ROOT": artifact_root, "ARCSYNTH_MAX_MODEL_LEN": "4096", "ARCSYNTH_MAX_LORA_RANK": "8",
           "ARCSYNTH_EXEC_TIMEOUT_S": "2", "ARCSYNTH_VISIBILITY_TIMEOUT_S": "15", "ARCSYNTH_REDELIVERY_CHECK_S": "1",
           "ARCSYNTH_JOB_LEASE_S": "6"}
    with LocalCluster(model="smollm2", env=env, log_dir=tmp_path_factory.mktemp("model-faults"),
                      ready_timeout=240) as c:
        yield c


def _running_job(cluster, worker: str, task_name: str, timeout: float) -> str:
    """Wait until `worker` runs a `task_name` job whose attempt has begun; return its id."""
    r = redis_client(cluster.redis.url, outage_s=0)
    inspect = cluster.app.control.inspect(destination=[worker], timeout=1.0, limit=1)
    found: list[str] = []

    def running() -> bool:
        for job in (inspect.active() or {}).get(worker, []):
            if job["name"] == task_name and job_attempts(r, [job["id"]])[job["id"]][0] == 1:
                found.append(job["id"])
        return bool(found)

    try:
        wait_until(running, timeout, f"{worker} to be running a {task_name} job", interval=0.2)
    finally:
        r.close()
    return found[0]


def _kill_and_restart(cluster, kind: str) -> list[str]:
    """SIGKILL the worker (its children die with it), then start it again under the same name."""
    name = worker_name(kind)
    victim = cluster.procs[name]
    family = psutil.Process(victim.pid).children(recursive=True)
    titles = [" ".join(p.cmdline()) for p in family]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    _, alive = psutil.wait_procs(family, timeout=60)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]  # no engine or pool process outlives it
    log = cluster.log_dir / f"{kind}.log"
    cluster.procs[name] = start_worker(kind, cluster.env, log)
    wait_ready(cluster.app, {name: cluster.procs[name]}, {name: log}, 240)
    return titles


def test_sigkill_of_inference_and_finetune_workers_mid_job_loses_nothing(model_cluster, taught, tmp_path):
    c, out = model_cluster, tmp_path / "run"
    # Epoch 0 samples through an adapter that writes the task's program, so there is something to
    # relabel and fine-tune on; --keep-searching makes the loop go on to epoch 1 regardless.
    sub = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", "arc-agi-1/training", "--tasks", "6150a2bd",
                          "--adapter", taught["adapter"], "--samples", "4", "--max-tokens", "64", "--temperature", "0.7",
                          "--epochs", "1", "--samples-per-epoch", "2", "--keep-searching", "--finetune-steps", "30",
                          "--out", str(out)], env=c.env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    run_id = sub.stdout.split()[-1]

    sample_job = _running_job(c, worker_name("inference"), "arcsynth.sample", 240)
    killed = _kill_and_restart(c, "inference")
    assert any("EngineCore" in title for title in killed)  # the engine died with its worker
    finetune_job = _running_job(c, worker_name("finetune"), "arcsynth.finetune", 400)
    _kill_and_restart(c, "finetune")

    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "wait", run_id], env=c.env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:] + (out / "producer.log").read_text()[-3000:]
    (record,) = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert record["task_id"] == "6150a2bd" and record["status"] == "done" and record["epochs"] == 1
    per_epoch = Counter(json.loads(line)["epoch"] for line in (out / "candidates.jsonl").read_text().splitlines())
    assert per_epoch == {0: 4, 1: 2}  # no duplicates from the redelivered jobs
    def logs() -> dict[str, str]:
        return {k: (c.log_dir / f"{k}.log").read_text(errors="replace") for k in ("inference", "finetune")}

    # Each worker logs a job's success just after storing its result: wait for the lines, then count them.
    wait_until(lambda: f"arcsynth.finetune[{finetune_job}] succeeded" in logs()["finetune"]
               and f"arcsynth.sample[{sample_job}] succeeded" in logs()["inference"], 30, "the success lines")
    assert logs()["inference"].count(f"arcsynth.sample[{sample_job}] succeeded") == 1
    assert logs()["finetune"].count(f"arcsynth.finetune[{finetune_job}] succeeded") == 1
    status = subprocess.run([sys.executable, "-m", "arcsynth.producer", "status", run_id], env=c.env, capture_output=True,
                            text=True, timeout=60).stdout
    assert (f"jobs handed to another worker after theirs died: 2; workers lost mid-job: "
            f"{worker_name('finetune')} (answers again), {worker_name('inference')} (answers again)") in status
