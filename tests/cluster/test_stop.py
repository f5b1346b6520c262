"""A run's stop (cancel or --timeout) and a job that ends at that moment, on a real Redis and the real
producer, job guard and payload store, with no worker: the worker's side is played by hand."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from arcsynth.common.celery_app import make_app
from arcsynth.common.data import load_tasks
from arcsynth.common.jobs import ExecuteResult
from arcsynth.common.models import Candidate, Completion, RunConfig, SamplingConfig
from arcsynth.common.payloads import payload_url, store_candidates
from arcsynth.common.redis_client import redis_client
from arcsynth.common.settings import Settings
from arcsynth.producer import run as run_module
from arcsynth.producer.redis_server import RedisServer
from arcsynth.producer.run import Producer, start_run
from arcsynth.producer.runstate import RunState
from arcsynth.workers import guard as guard_module
from arcsynth.workers.guard import GuardedTask, JobGuard

pytestmark = pytest.mark.cluster


def test_a_job_that_ended_just_before_the_stop_is_recorded_though_its_worker_then_drops_its_payload(tmp_path, monkeypatch):
    """The execute job stored its result; its worker marks the job done only a moment later (Celery calls
    `after_return` after storing). The stop gives the job up in that moment: the worker, no longer holding
    the lease, drops its payload and result. The producer read them first, so the job's programs count,
    and nothing is left on storage. (The producer once gave the jobs up first: the programs were lost,
    or it failed reading a payload already gone and wrote no results.)"""
    with RedisServer() as server:
        settings = Settings(_env_file=None, broker_url=SecretStr(server.url), result_backend=SecretStr(server.url),
                            artifact_root=str(tmp_path / "artifacts"))
        app = make_app(settings)

        @app.task(base=GuardedTask, bind=True, name="test.execute")
        def execute(self):  # only its after_return runs, as the worker's would
            return None

        task = load_tasks("arc-agi-1/training", task_ids=["6150a2bd"])[0]
        config = RunConfig(run_id="stop-race", dataset="arc-agi-1/training", task_ids=[task.id], model="m",
                           sampling=SamplingConfig(n=1))
        r = redis_client(server.url)
        state = RunState(r, config.run_id)
        producer = Producer(app, start_run(tmp_path / "run", config, [task], state), state)
        state.claim()
        producer._start(task)  # its search is sent; no worker takes it
        sample_id, execute_id = producer.active[task.id].job.ids

        guard = JobGuard(r, execute_id, "execute-1@host")  # the execute worker runs the job ...
        assert guard.enter()
        guard_module._guards[execute_id] = guard
        ref = payload_url(settings.artifact_root, execute_id)
        store_candidates(ref, [Candidate(task_id=task.id, index=0, code="def transform(grid):\n    return grid",
                                         completion=Completion(text="x"), job=execute_id)])
        result = ExecuteResult(task_id=task.id, count=1, candidates_ref=ref).model_dump(mode="json")
        app.backend.mark_as_done(sample_id, {"task_id": task.id})
        app.backend.mark_as_done(execute_id, result)  # ... and has stored its result

        given_up = run_module.cancel_jobs

        def cancel_then_after_return(client, ids):  # the stop lands before the worker's after_return
            given_up(client, ids)
            execute.after_return("SUCCESS", result, execute_id, (), {}, None)

        monkeypatch.setattr(run_module, "cancel_jobs", cancel_then_after_return)
        state.set(state="cancelling")
        outcome = producer.run()
        r.close()

    assert outcome.state == "cancelled"
    assert len((tmp_path / "run" / "candidates.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "run" / "submission.json").exists()
    assert not list((tmp_path / "artifacts" / "payloads").iterdir())


@pytest.fixture
def no_worker_run(tmp_path):
    """(producer factory, run state) for a one-task run on a real Redis that no worker serves."""
    with RedisServer() as server:
        settings = Settings(_env_file=None, broker_url=SecretStr(server.url), result_backend=SecretStr(server.url),
                            artifact_root=str(tmp_path / "artifacts"))
        app = make_app(settings)
        task = load_tasks("arc-agi-1/training", task_ids=["6150a2bd"])[0]
        config = RunConfig(run_id="stop", dataset="arc-agi-1/training", task_ids=[task.id], model="m",
                           sampling=SamplingConfig(n=1), timeout_s=3600)
        r = redis_client(server.url)
        state = RunState(r, config.run_id)
        rundir = start_run(tmp_path / "run", config, [task], state)
        yield (lambda: Producer(app, rundir, state)), state
        r.close()


def test_a_producer_resumed_after_dying_mid_stop_finishes_the_stop(no_worker_run, tmp_path):
    """A run past its --timeout gives its jobs up (later workers skip them); a producer that died then,
    resumed, must not wait a whole new --timeout on jobs nobody will run: the stop was recorded first."""
    make_producer, state = no_worker_run
    state.set(stopping="timed out")  # as the producer that died mid-stop left it
    outcome = make_producer().run()
    assert outcome.state == "done" and outcome.failed == {"6150a2bd": "timed out"}
    assert (tmp_path / "run" / "submission.json").exists()


def test_a_cancel_asked_for_as_the_producer_starts_is_not_overwritten(no_worker_run):
    """Ctrl-C's cancel is written from another thread: claiming the run never turns `cancelling` back into
    `running`, which would have left the run going after the command said it was cancelling."""
    _, state = no_worker_run
    state.set(state="cancelling")
    assert state.claim() == "cancelling" and state.state() == "cancelling"
    state.set(state="running")
    assert state.claim() == "running" and state.get("producer_pid")
