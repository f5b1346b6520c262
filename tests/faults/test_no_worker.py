"""A run never waits silently on nobody: a needed queue without a live consumer is said, with a real
Redis and a real execute worker (and no inference worker at all)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from tests.support import cli, wait_until

GHOST = "no worker consumes inference.ghost (inference worker for model ghost)"


@pytest.fixture(scope="module")
def execute_only(tmp_path_factory):
    """Redis and one execute worker: nothing consumes any inference queue."""
    from arcsynth.producer.cluster import LocalCluster

    root = tmp_path_factory.mktemp("no-worker")
    env = {"ARCSYNTH_RUN_ROOT": str(root / "runs"), "ARCSYNTH_ARTIFACT_ROOT": str(root / "artifacts")}
    with LocalCluster(model="ghost", kinds=("execute",), env=env, log_dir=root / "logs", ready_timeout=180) as c:
        yield c


def _stop_producer(stderr: str) -> None:
    """End the detached producer `submit` started (by its pid), if it still runs."""
    found = re.search(r"producer pid (\d+)", stderr)
    if not found:
        return
    pid = int(found.group(1))
    try:
        if b"arcsynth.producer" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass  # already gone


def test_a_run_whose_model_no_worker_serves_is_said_by_submit_status_and_wait(execute_only, tmp_path):
    env = {"ARCSYNTH_MODEL": "ghost", "ARCSYNTH_NO_WORKER_WARN_S": "1"}
    submitted = cli(execute_only, "submit", "arc-agi-1/training", "--tasks", "6150a2bd", "--samples", "1",
                    "--timeout", "20", env=env, timeout=120)
    try:
        run_id = submitted.stdout.strip().splitlines()[0]
        warnings = [line for line in submitted.stderr.splitlines() if line.startswith("warning: ")]
        assert warnings == [f"warning: {GHOST}; the run waits for one"], submitted.stderr  # execute has its worker

        status = cli(execute_only, "status", run_id, env=env, timeout=120)
        assert GHOST in status.stdout.splitlines(), status.stdout
        assert "no worker consumes execute" not in status.stdout

        # wait keeps waiting, says once what is missing, and ends when the run's own --timeout ends the run.
        waited = cli(execute_only, "wait", run_id, env=env, timeout=180)
        said = [line for line in waited.stderr.splitlines() if "no worker consumes" in line]
        assert len(said) == 1 and said[0].startswith(f"arcsynth: {GHOST} for "), waited.stderr[-3000:]
        assert "done: submission" in waited.stdout, waited.stdout
        assert "failed 6150a2bd: timed out" in waited.stderr.splitlines()  # a run that came to nothing says so
    finally:
        _stop_producer(submitted.stderr)
    _a_worker_started_later_skips_what_the_run_gave_up(execute_only, tmp_path)


def _a_worker_started_later_skips_what_the_run_gave_up(cluster, tmp_path: Path) -> None:
    """The timed-out run's sample is still queued for `ghost`. A worker for it started now (a restart, a
    pool scaled up from zero on queue length) never got the run's revoke; it skips the job, because its
    lease says the run gave it up, instead of sampling for a run that is over."""
    import redis

    from arcsynth.common.lifetime import terminate
    from arcsynth.producer.cluster import start_worker, wait_ready, worker_name

    r = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
    queued = r.lrange("inference.ghost", 0, -1)
    r.close()
    assert len(queued) == 1, queued  # the run's one sample, never taken
    job = json.loads(queued[0])["headers"]["id"]
    replay = tmp_path / "programs.jsonl"
    replay.write_text(json.dumps({"task_id": "6150a2bd", "text": "```python\ndef transform(grid):\n    return grid\n```"}))
    env = {**cluster.env, "ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_MODEL": "ghost"}
    name, log = worker_name("inference", 7), tmp_path / "inference-7.log"
    proc = start_worker("inference", env, log, index=7)
    try:
        wait_ready(cluster.app, {name: proc}, {name: log}, 120)
        wait_until(lambda: f"job {job} was given up by its run (it stopped); this delivery skips it" in log.read_text(),
                   60, "the late worker to skip the given-up job")
        assert f"arcsynth.sample[{job}] succeeded" not in log.read_text()
    finally:
        terminate([proc], 30)


def test_the_watch_says_when_a_queue_is_missing_back_and_when_its_worker_stops_answering(execute_only):
    from arcsynth.producer.cluster import worker_name
    from arcsynth.producer.liveness import ConsumerWatch

    app, name = execute_only.app, worker_name("execute")
    pid = execute_only.procs[name].pid
    needed = {"inference.phantom": "inference worker for model phantom", "execute": "execute worker"}
    lines: list[str] = []

    def said(prefix: str) -> bool:
        return any(line.startswith(prefix) for line in lines)

    try:
        with ConsumerWatch(app, needed, warn_after_s=2.0, say=lines.append, interval_s=0.1, reply_timeout_s=1.0):
            wait_until(lambda: said("no worker consumes inference.phantom (inference worker for model phantom) for "),
                       60, "the missing inference queue to be said")
            assert not said("no worker consumes execute"), lines

            # A worker starts consuming it (Celery's own remote control makes the execute worker do so).
            app.control.add_consumer("inference.phantom", destination=[name], reply=True, timeout=10)
            wait_until(lambda: said(f"inference.phantom (inference worker for model phantom) has a consumer again: {name}"),
                       60, "the queue's consumer to be said back")

            # The worker hangs (stopped): it is named, and so are the queues it alone consumed.
            os.kill(pid, signal.SIGSTOP)
            wait_until(lambda: said(f"worker {name} (consumes execute, inference.phantom) has not answered for "),
                       60, "the silent worker to be said")
            wait_until(lambda: said("no worker consumes execute (execute worker) for ")
                       and any(f"it was consumed by {name}, which stopped answering" in line for line in lines),
                       60, "its queues to be said missing")
            os.kill(pid, signal.SIGCONT)
            wait_until(lambda: said(f"worker {name} answers again") and said("execute (execute worker) has a consumer again"),
                       60, "the worker to be said back")
        assert sum(line.startswith("no worker consumes inference.phantom") for line in lines) == 2, lines  # once per outage
    finally:
        os.kill(pid, signal.SIGCONT)
        app.control.cancel_consumer("inference.phantom", destination=[name], reply=True, timeout=10)
