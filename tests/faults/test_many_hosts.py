"""Many hosts, for real: Redis, two execute hosts, an inference host and the producer each on a
network namespace of their own, talking over veth links. A run with the real model (vLLM on CPU)
completes across them; then an execute host's link goes down in the middle of a job, and the job
is handed to the other execute host: every task is scored exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from arcsynth.common.attempts import job_attempts
from arcsynth.common.celery_app import make_app
from arcsynth.common.data import load_tasks
from arcsynth.common.redis_client import redis_client
from arcsynth.common.settings import Settings
from arcsynth.producer.cluster import start_worker, stop_process, wait_ready, worker_name
from arcsynth.producer.redis_server import RedisServer
from tests.support import SLOW, SLOW_DATASET, fenced, wait_until
from tests.support.netns import NamespacesUnavailable, Network

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def network():
    try:
        with Network(["redis", "exec1", "exec2", "infer", "producer"]) as net:
            yield net
    except NamespacesUnavailable as exc:
        pytest.skip(f"cannot build hosts from network namespaces here: {exc}")


def _producer(net, env, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*net["producer"].launcher, sys.executable, "-m", "arcsynth.producer", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_run_across_hosts_survives_an_execute_host_cut_off_mid_job(network, smollm2, tmp_path):
    net = network
    redis_host = net["redis"]
    server = RedisServer(password="hosts-pw", appendonly=True, host=redis_host.address, launcher=redis_host.launcher)
    replay = tmp_path / "programs.jsonl"
    slow_tasks = [t.id for t in load_tasks(SLOW_DATASET, limit=8)]
    replay.write_text("".join(json.dumps({"task_id": tid, "text": fenced(SLOW)}) + "\n" for tid in slow_tasks))
    procs: dict[str, subprocess.Popen[bytes]] = {}  # by worker name, as are their logs
    logs = {worker_name(kind, i): tmp_path / f"{kind}-{i}.log" for kind, i in
            (("execute", 1), ("execute", 2), ("inference", 1), ("inference", 2))}

    def start(kind: str, index: int, host: str, env: dict[str, str], *extra: str) -> None:
        name = worker_name(kind, index)
        procs[name] = start_worker(kind, env, logs[name], list(extra), index=index, launcher=net[host].launcher)
    with server:
        env = {**os.environ, "ARCSYNTH_BROKER_URL": server.url, "ARCSYNTH_RESULT_BACKEND": server.url,
               "ARCSYNTH_MODEL": "smollm2", "ARCSYNTH_MAX_MODEL_LEN": "4096", "ARCSYNTH_EXEC_TIMEOUT_S": "8",
               "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "ARCSYNTH_RUN_ROOT": str(tmp_path / "runs"),
               "ARCSYNTH_VISIBILITY_TIMEOUT_S": "10", "ARCSYNTH_REDELIVERY_CHECK_S": "1", "ARCSYNTH_JOB_LEASE_S": "6",
               "ARCSYNTH_EXECUTE_TIME_LIMIT_S": "30", "ARCSYNTH_INFERENCE_TIME_LIMIT_S": "120",
               "ARCSYNTH_FINETUNE_TIME_LIMIT_S": "30"}
        app = make_app(Settings(broker_url=server.url))  # the test looks in from the machine itself
        try:
            start("execute", 1, "exec1", env, "--concurrency", "1")
            start("execute", 2, "exec2", env, "--concurrency", "1")
            start("inference", 1, "infer", env)
            wait_ready(app, dict(procs), logs, 300)

            # 1. A run with the real model, across the hosts.
            out = tmp_path / "model-run"
            r = _producer(net, env, "submit", "arc-agi-1/training", "--tasks", "6150a2bd,74dd1130", "--samples", "2",
                          "--max-tokens", "48", "--out", str(out), "--wait", timeout=600)
            assert r.returncode == 0, r.stderr[-2000:]
            records = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
            assert sorted(rec["task_id"] for rec in records) == ["6150a2bd", "74dd1130"]
            assert {rec["status"] for rec in records} == {"done"}
            cands = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
            assert len(cands) == 4 and all(c["completion"]["completion_tokens"] > 0 for c in cands)
            assert "arcsynth.sample[" in logs[worker_name("inference", 1)].read_text()

            # 2. The inference host now serves fixed programs that run 1 s each, so execute jobs
            # take long enough to be caught mid-way; execute-1's link goes down during one of them.
            stop_process(procs.pop(worker_name("inference", 1)))
            replay_env = {**env, "ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay),
                          "ARCSYNTH_MODEL": "replay"}
            start("inference", 2, "infer", replay_env)
            wait_ready(app, {worker_name("inference", 2): procs[worker_name("inference", 2)]}, logs, 120)
            out = tmp_path / "cut-run"
            sub = _producer(net, replay_env, "submit", SLOW_DATASET, "--limit", "8", "--samples", "1", "--out", str(out))
            assert sub.returncode == 0, sub.stderr
            run_id = sub.stdout.split()[-1]
            first = worker_name("execute", 1)
            inspect = app.control.inspect(destination=[first], timeout=1.0, limit=1)
            client = redis_client(server.url, outage_s=0)
            cut_job: list[str] = []

            def mid_job() -> bool:
                for job in (inspect.active() or {}).get(first, []):
                    if job_attempts(client, [job["id"]])[job["id"]][0] == 1:
                        cut_job.append(job["id"])
                return bool(cut_job)

            wait_until(mid_job, 120, "execute-1 to be in the middle of a job", interval=0.1)
            net["exec1"].cut()
            client.close()
            r = _producer(net, replay_env, "wait", run_id, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:] + (out / "producer.log").read_text()[-3000:]
            records = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
            assert sorted(rec["task_id"] for rec in records) == sorted(slow_tasks)  # every task scored once
            assert {rec["status"] for rec in records} == {"done"}
            per_task = Counter(json.loads(line)["task_id"] for line in (out / "candidates.jsonl").read_text().splitlines())
            assert per_task == {tid: 1 for tid in slow_tasks}  # no duplicate candidates
            wait_until(lambda: f"arcsynth.execute[{cut_job[0]}] succeeded" in logs[worker_name("execute", 2)].read_text(), 30,
                       "execute-2 to log the job it took over")
            status = _producer(net, replay_env, "status", run_id)
            assert f"workers lost mid-job: {first} (not answering)" in status.stdout, status.stdout
        finally:
            for p in procs.values():
                p.kill()  # execute-1 is cut off: a graceful stop could not reach the broker
            for p in procs.values():
                p.wait(timeout=30)
            app.close()
