"""A job message the broker lost is found by the producer and sent again under its id; the run ends
with every task scored once and nothing run twice.

A light replay cluster (Redis, one inference and one execute worker) whose producer looks for lost
messages every second. The broker's loss (a message taken off its queue and never recorded as
unacknowledged) is made by hand, in two ways: the queue's worker stops consuming it (Celery's
remote control), the message is removed from the queue (LREM), and the worker consumes again once
the producer has re-sent it; or the worker running the job is SIGKILLed and the message removed
from `unacked`, and the job is re-sent once the dead worker's lease has lapsed.
"""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from arcsynth.common.data import load_tasks
from arcsynth.common.jobs import inference_queue
from arcsynth.common.models import RunConfig, SamplingConfig
from arcsynth.common.redis_client import redis_client
from arcsynth.common.settings import Settings
from arcsynth.producer.cluster import LocalCluster, start_worker, wait_ready, worker_name
from arcsynth.producer.lost_jobs import message_id
from arcsynth.producer.runstate import RunState
from tests.support import FLIP, SLOW, TRANSPOSE, cli, fenced, run_in_process, wait_until

TASK = "6150a2bd"  # the flip solves it
SLOW_TASK = "74dd1130"  # its one program runs 5 s, long enough to kill its worker mid-job


@pytest.fixture(scope="module")
def lost_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("lost-jobs")
    replay = root / "programs.jsonl"
    programs = [(TASK, FLIP), (TASK, TRANSPOSE), (SLOW_TASK, SLOW.replace("time.sleep(1.0)", "time.sleep(5.0)"))]
    replay.write_text("".join(json.dumps({"task_id": t, "text": fenced(code)}) + "\n" for t, code in programs))
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "20",
           "ARCSYNTH_ARTIFACT_ROOT": str(root / "artifacts"), "ARCSYNTH_JOB_LEASE_S": "3"}
    with LocalCluster(model="replay", kinds=("execute", "inference"), env=env, log_dir=root / "logs", ready_timeout=120,
                      settings=Settings(lost_job_check_s=1.0)) as cluster:
        yield cluster


def _consumes(cluster, worker: str, queue: str) -> bool:
    replies = cluster.app.control.inspect(destination=[worker], timeout=1.0).active_queues() or {}
    return any(q["name"] == queue for q in replies.get(worker, []))


@pytest.mark.parametrize("stage", ["sample", "execute"])
def test_a_message_lost_from_its_queue_is_sent_again_and_the_run_finishes(lost_cluster, tmp_path, capsys, stage):
    """`sample`: the search's first message; `execute`: the message the sample passed on once it
    finished (re-sent alone, with the stored samples)."""
    cluster = lost_cluster
    kind, queue = ("inference", inference_queue("replay")) if stage == "sample" else ("execute", "execute")
    worker, position = worker_name(kind), 0 if stage == "sample" else 1
    app, r = cluster.app, redis_client(cluster.redis.url, outage_s=0)
    run_id = f"lost-{stage}"
    config = RunConfig(run_id=run_id, dataset="arc-agi-1/training", task_ids=[TASK], model="replay",
                       sampling=SamplingConfig(n=2), timeout_s=120)
    state = RunState(r, run_id)
    app.control.cancel_consumer(queue, destination=[worker], reply=True, timeout=10)
    pool = ThreadPoolExecutor(1)
    try:
        wait_until(lambda: not _consumes(cluster, worker, queue), 30, f"{worker} to stop consuming {queue}")
        running = pool.submit(run_in_process, app, load_tasks("arc-agi-1/training", task_ids=[TASK]), config,
                              tmp_path / "run")
        wait_until(lambda: (job := state.jobs().get(TASK)) is not None and job.sent, 60, "the job to be sent")
        job_id = state.jobs()[TASK].ids[position]
        held: list[str] = []

        def queued() -> bool:
            held[:] = [raw for raw in r.lrange(queue, 0, -1) if message_id(raw) == job_id]
            return bool(held)

        wait_until(queued, 60, f"the {stage} message in {queue}")
        assert r.lrem(queue, 0, held[0]) == 1  # the broker loses it
        wait_until(lambda: state.get("resent") == "1", 60, "the producer to send it again")
        assert queued()  # under the same id
        app.control.add_consumer(queue, destination=[worker], reply=True, timeout=10)
        outcome = running.result(timeout=120)
    finally:
        if state.state() not in ("done", "cancelled"):
            state.set(state="cancelling")  # a failed test still ends its producer
        app.control.add_consumer(queue, destination=[worker], reply=True, timeout=10)
        pool.shutdown(wait=True)

    assert outcome.state == "done" and outcome.score == 1.0
    records = [json.loads(line) for line in (tmp_path / "run" / "tasks.jsonl").read_text().splitlines()]
    assert [(rec["task_id"], rec["status"]) for rec in records] == [(TASK, "done")]
    candidates = [json.loads(line) for line in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert sorted(c["index"] for c in candidates) == [0, 1]  # the two programs, recorded once each
    assert state.get("resent") == "1"
    err = capsys.readouterr().err
    assert f"task {TASK}: the {stage} job {job_id}" in err and err.count("sent again under the same id") == 1, err
    # The stage ran once (the re-sent message was the only one left); the worker may log it after the run ended.
    succeeded = f"arcsynth.{stage}[{job_id}] succeeded"
    wait_until(lambda: succeeded in (cluster.log_dir / f"{kind}.log").read_text(errors="replace"), 30, "the worker's log")
    assert (cluster.log_dir / f"{kind}.log").read_text(errors="replace").count(succeeded) == 1
    r.close()


def test_a_message_lost_from_unacked_with_its_killed_worker_is_sent_again_once_the_lease_lapsed(lost_cluster, tmp_path,
                                                                                              capsys):
    """The execute worker dies mid-job and the message it held is gone from `unacked` (as when the
    worker dies between taking it and recording it): while the dead worker's lease lasts the job
    counts as running; once it lapsed, the producer re-sends the execute, and the restarted worker runs it."""
    cluster = lost_cluster
    app, r = cluster.app, redis_client(cluster.redis.url, outage_s=0)
    name = worker_name("execute")
    run_id = "lost-unacked"
    config = RunConfig(run_id=run_id, dataset="arc-agi-1/training", task_ids=[SLOW_TASK], model="replay",
                       sampling=SamplingConfig(n=1), timeout_s=120)
    state = RunState(r, run_id)
    inspect = app.control.inspect(destination=[name], timeout=1.0)
    pool = ThreadPoolExecutor(1)
    try:
        running = pool.submit(run_in_process, app, load_tasks("arc-agi-1/training", task_ids=[SLOW_TASK]), config,
                              tmp_path / "run")
        wait_until(lambda: (job := state.jobs().get(SLOW_TASK)) is not None and job.sent, 60, "the job to be sent")
        job_id = state.jobs()[SLOW_TASK].ids[1]
        wait_until(lambda: any(j["id"] == job_id for j in (inspect.active() or {}).get(name, [])), 60,
                   "the execute worker to run the job", interval=0.1)
        victim = cluster.procs[name]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        tags = [tag for tag, raw in r.hgetall("unacked").items() if message_id(json.loads(raw)[0]) == job_id]
        assert len(tags) == 1
        r.hdel("unacked", *tags)  # the broker loses it
        r.zrem("unacked_index", *tags)
        wait_until(lambda: state.get("resent") == "1", 60, "the producer to send it again")
        log = cluster.log_dir / "execute.log"
        cluster.procs[name] = start_worker("execute", cluster.env, log)
        wait_ready(app, {name: cluster.procs[name]}, {name: log}, 60)
        outcome = running.result(timeout=120)
    finally:
        if state.state() not in ("done", "cancelled"):
            state.set(state="cancelling")
        pool.shutdown(wait=True)

    assert outcome.state == "done"
    records = [json.loads(line) for line in (tmp_path / "run" / "tasks.jsonl").read_text().splitlines()]
    assert [(rec["task_id"], rec["status"]) for rec in records] == [(SLOW_TASK, "done")]
    assert len((tmp_path / "run" / "candidates.jsonl").read_text().splitlines()) == 1
    assert state.get("resent") == "1"
    assert f"task {SLOW_TASK}: the execute job {job_id}" in capsys.readouterr().err
    assert "job messages lost by the broker and sent again: 1" in cli(cluster, "status", run_id).stdout
    succeeded = f"arcsynth.execute[{job_id}] succeeded"
    wait_until(lambda: succeeded in (cluster.log_dir / "execute.log").read_text(errors="replace"), 30, "the worker's log")
    assert (cluster.log_dir / "execute.log").read_text(errors="replace").count(succeeded) == 1
    r.close()
