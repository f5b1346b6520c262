"""Runs that survive their producer: submit/wait/status/runs/resume/cancel/results on a live cluster.

The cluster is the light replay one (fixed programs, real Redis, real execute and inference
workers); the slow programs sleep once per run so a test can catch a run mid-way.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import click
import psutil
import pytest
import redis

from arcsynth.common.data import load_tasks
from arcsynth.common.models import Candidate
from arcsynth.common.submission import validate_submission
from arcsynth.producer.runstate import RunState
from tests.support import SLOW_DATASET, cli, wait_until


def state_of(cluster, run_id: str) -> RunState:
    return RunState(redis.Redis.from_url(cluster.redis.url, decode_responses=True), run_id)


@pytest.fixture
def producers(replay_cluster):
    """Runs this test submitted; their detached producers are killed at the end whatever happened."""
    started: list[str] = []
    yield started
    for run_id in started:
        pid = state_of(replay_cluster, run_id).get("producer_pid")
        try:
            proc = psutil.Process(int(pid or 0))
            if "producer" in " ".join(proc.cmdline()):
                proc.kill()
                proc.wait(timeout=10)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
            pass  # already gone (a zombie only waits for its adopter to reap it)


def submit(cluster, producers, dataset, out: Path, *extra) -> str:
    r = cli(cluster, "submit", dataset, "--out", str(out), *extra, timeout=60)
    run_id = r.stdout.strip().splitlines()[-1]
    producers.append(run_id)
    return run_id


def finished(out: Path) -> int:
    path = out / "tasks.jsonl"
    return len([ln for ln in path.read_text().splitlines() if ln.endswith("}")]) if path.exists() else 0


def test_submit_returns_at_once_then_wait_status_runs_and_results(replay_cluster, producers, tmp_path):
    out = tmp_path / "run"
    run_id = submit(replay_cluster, producers, "arc-agi-1/training", out, "--tasks", "6150a2bd,74dd1130,007bbfb7",
                    "--samples", "2")
    assert (out / "run.json").exists() and (out / "inputs.jsonl").exists()
    r = cli(replay_cluster, "wait", run_id)
    assert f"done: submission {out / 'submission.json'}" in r.stdout
    assert "score: 0.667 over 3 tasks" in r.stdout

    status = cli(replay_cluster, "status", run_id).stdout
    assert f"run {run_id}: done" in status
    assert "tasks: 3 done, 0 failed, 0 skipped, 0 cancelled, 0 unfinished" in status
    rows = {line.split()[0]: line.split()[1:] for line in status.splitlines() if line.split()[:1] in
            (["sample"], ["execute"], ["finetune"])}
    assert rows == {"sample": ["0", "0", "3", "0"], "execute": ["0", "0", "3", "0"], "finetune": ["0", "0", "0", "0"]}
    assert "candidates: 6" in status and "score so far: 0.667 (2 solved of 3 finished)" in status
    assert cli(replay_cluster, "status", str(out)).stdout == status  # a run directory names the run too

    listing = cli(replay_cluster, "runs").stdout
    (row,) = [line for line in listing.splitlines() if line.startswith(run_id)]
    assert " done " in row and "3/3" in row and "model=smollm2 samples=2 epochs=0 scope=task" in row

    (out / "submission.json").unlink()
    r = cli(replay_cluster, "results", run_id)
    assert "score: 0.667 over 3 tasks (3 finished)" in r.stdout
    validate_submission(json.loads((out / "submission.json").read_text()),
                        load_tasks("arc-agi-1/training", task_ids=["6150a2bd", "74dd1130", "007bbfb7"]))
    # Candidates travel by reference (a file in shared storage), and both the Celery results and
    # those files are deleted once the producer has handled them.
    client = redis.Redis.from_url(replay_cluster.redis.url)
    assert not list(client.scan_iter("celery-task-meta-*"))
    payloads = Path(replay_cluster.env["ARCSYNTH_ARTIFACT_ROOT"]) / "payloads"
    assert payloads.is_dir() and not list(payloads.iterdir())


def test_status_counts_during_a_run(replay_cluster, producers, tmp_path):
    from arcsynth.producer.follow import stage_counts

    out = tmp_path / "run"
    run_id = submit(replay_cluster, producers, SLOW_DATASET, out, "--limit", "4", "--samples", "1", "--max-active", "4")
    state = state_of(replay_cluster, run_id)
    snapshots = []

    def snapshot_until_done() -> bool:
        info, rows = stage_counts(state, replay_cluster.app)
        snapshots.append((info, {k: (v.pending, v.running, v.done, v.failed) for k, v in rows.items()}))
        return info.get("state") == "done"

    wait_until(snapshot_until_done, 120, "the run to finish", interval=0.1)
    for info, rows in snapshots:
        sampled = rows["sample"][2]
        assert sum(rows["sample"]) == 4, snapshots  # every task is somewhere in the sample stage
        assert sum(rows["execute"]) == sampled, snapshots  # sampled tasks are somewhere in execute
        assert rows["execute"][1] <= 2, snapshots  # two slots on two cores
        assert rows["execute"][2] >= int(info.get("done", 0)), snapshots
    # Seen on the way: both slots busy while another task waited its turn.
    assert any(rows["execute"][1] == 2 and rows["execute"][0] >= 1 for _, rows in snapshots), snapshots

    text = cli(replay_cluster, "status", run_id).stdout
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in text.splitlines()
            if line.split()[:1] in (["sample"], ["execute"])}
    assert rows == {"sample": [0, 0, 4, 0], "execute": [0, 0, 4, 0]}, text


def test_resume_after_the_producer_is_killed_gives_the_same_submission(replay_cluster, producers, tmp_path):
    args = ("--limit", "10", "--samples", "1", "--max-active", "2")
    straight = tmp_path / "straight"
    cli(replay_cluster, "wait", submit(replay_cluster, producers, SLOW_DATASET, straight, *args))

    out = tmp_path / "killed"
    run_id = submit(replay_cluster, producers, SLOW_DATASET, out, *args)
    state = state_of(replay_cluster, run_id)
    wait_until(lambda: finished(out) >= 3, 120, "three tasks finished")
    pid = int(state.get("producer_pid"))
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30,
               "the producer to die")
    assert finished(out) < 10
    status = cli(replay_cluster, "status", run_id).stdout
    assert f"producer: not running -- continue with `arcsynth resume {run_id}`" in status

    # Results from whatever finished: a valid submission with placeholders for the rest.
    cli(replay_cluster, "results", run_id)
    tasks = load_tasks(SLOW_DATASET, limit=10)
    validate_submission(json.loads((out / "submission.json").read_text()), tasks)

    before = finished(out)
    r = cli(replay_cluster, "resume", run_id, "--wait")
    assert "done: submission" in r.stdout
    assert (out / "submission.json").read_text() == (straight / "submission.json").read_text()
    records = [json.loads(line)["task_id"] for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert sorted(records) == sorted(t.id for t in tasks) and len(records) == len(set(records))
    cands = [Candidate.model_validate_json(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert Counter(c.task_id for c in cands) == Counter({t.id: 1 for t in tasks})  # nothing repeated
    assert before >= 3


def test_cancel_revokes_what_has_not_started_and_leaves_the_run_consistent(replay_cluster, producers, tmp_path):
    out = tmp_path / "run"
    run_id = submit(replay_cluster, producers, SLOW_DATASET, out, "--limit", "12", "--samples", "1",
                    "--max-active", "6")
    state = state_of(replay_cluster, run_id)
    wait_until(lambda: finished(out) >= 1, 60, "a first task finished")
    pid = int(state.get("producer_pid"))
    r = cli(replay_cluster, "cancel", run_id)
    assert f"cancelled {run_id}" in r.stdout
    assert state.state() == "cancelled"
    psutil.Process(pid).wait(timeout=30) if psutil.pid_exists(pid) else None

    records = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert len(records) == 12 and len({r["task_id"] for r in records}) == 12
    assert Counter(r["status"] for r in records)["cancelled"] >= 5
    validate_submission(json.loads((out / "submission.json").read_text()), load_tasks(SLOW_DATASET, limit=12))

    # No work of the run is left: queues drain (revoked messages are dropped) and no worker is busy.
    client = redis.Redis.from_url(replay_cluster.redis.url)
    inspect = replay_cluster.app.control.inspect(timeout=2.0)

    def idle() -> bool:
        active = inspect.active() or {}
        return all(client.llen(q) == 0 for q in ("inference", "execute")) and not any(active.values())

    wait_until(idle, 60, "queues empty and workers idle", interval=0.5)
    assert len((out / "candidates.jsonl").read_text().splitlines()) <= 12 - 5
    assert not state.jobs()
    r = cli(replay_cluster, "resume", run_id, check=False)
    assert r.returncode == 2 and "is cancelled" in r.stderr


@pytest.mark.parametrize("command", ["resume", "cancel"])
def test_two_resumes_or_cancels_at_once_after_the_producer_died_end_each_task_once(replay_cluster, producers,
                                                                                    tmp_path, monkeypatch, command):
    out = tmp_path / "run"
    run_id = submit(replay_cluster, producers, SLOW_DATASET, out, "--limit", "12", "--samples", "1",
                    "--max-active", "6")
    state = state_of(replay_cluster, run_id)
    wait_until(lambda: finished(out) >= 1, 60, "a first task finished")
    pid = int(state.get("producer_pid"))
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30,
               "the producer to die")

    # Two commands in this process, each slowed down where it starts driving the run (a producer
    # started, or the cancellation recorded here) so that both have looked before either acts.
    for name, value in replay_cluster.env.items():
        if name.startswith("ARCSYNTH_"):
            monkeypatch.setenv(name, value)
    from arcsynth.producer import manage_cli, run

    def slowly(f):
        return lambda *args: (time.sleep(1.0), f(*args))[1]

    if command == "resume":
        monkeypatch.setattr(manage_cli, "start_producer", slowly(manage_cli.start_producer))
    else:
        monkeypatch.setattr(run.Producer, "cancel", slowly(run.Producer.cancel))
    ends: list[str] = []

    def one() -> None:
        try:
            getattr(manage_cli, command).main([run_id], standalone_mode=False)
            ends.append("ok")
        except click.ClickException as exc:
            ends.append(exc.format_message())

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if command == "resume":  # one producer started; the other command says why not
        assert sorted(ends) == ["ok", f"run {run_id} still has a live producer (pid {state.get('producer_pid')} "
                                      f"on {state.get('producer_host')})"], ends
    else:  # the second waits for the first to finish the cancellation
        assert ends == ["ok", "ok"], ends
    cli(replay_cluster, "wait", run_id, timeout=300)

    records = [json.loads(line)["task_id"] for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert len(records) == 12 and len(set(records)) == 12, Counter(records)
    assert state.finished_tasks() == 12
    assert state.state() == ("done" if command == "resume" else "cancelled")


def test_a_run_resumed_from_its_moved_directory_is_found_there_by_id(replay_cluster, producers, tmp_path):
    out = tmp_path / "run"
    run_id = submit(replay_cluster, producers, SLOW_DATASET, out, "--limit", "8", "--samples", "1",
                    "--max-active", "1")
    state = state_of(replay_cluster, run_id)
    wait_until(lambda: finished(out) >= 1, 60, "a first task finished")
    pid = int(state.get("producer_pid"))
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30,
               "the producer to die")
    moved = out.rename(tmp_path / "moved")
    assert "done: submission" in cli(replay_cluster, "resume", str(moved), "--wait").stdout

    assert f"submission: {moved / 'submission.json'}" in cli(replay_cluster, "results", run_id).stdout
    assert f"run directory: {moved}" in cli(replay_cluster, "status", run_id).stdout
    assert len((moved / "tasks.jsonl").read_text().splitlines()) == 8


def test_producer_memory_stays_flat_over_400_tasks(replay_cluster, producers, tmp_path):
    out = tmp_path / "run"
    run_id = submit(replay_cluster, producers, "arc-agi-1/training", out, "--samples", "2")
    cli(replay_cluster, "wait", run_id, timeout=900)
    info = state_of(replay_cluster, run_id).info()
    marks = {p: float(info[f"rss_mb_at_{p}"]) for p in (25, 50, 75, 100)}
    print(f"\nproducer memory over 400 tasks: {marks} MB at % finished; peak {info['rss_peak_mb']} MB")
    assert len((out / "candidates.jsonl").read_text().splitlines()) == 800
    assert marks[100] - marks[25] < 25, marks  # flat: no growth with the number of finished tasks
    assert json.loads((out / "score.json").read_text())["total"] == 400


def test_unknown_run_is_a_user_error(replay_cluster):
    r = cli(replay_cluster, "status", "no-such-run", check=False)
    assert r.returncode == 2 and "run no-such-run: no such run" in r.stderr and "Traceback" not in r.stderr


def test_execute_results_name_a_file_of_candidates_instead_of_carrying_them(replay_cluster):
    from arcsynth.common.jobs import ExecuteRequest, SampleResult, send_execute
    from arcsynth.common.models import Task
    from arcsynth.common.payloads import drop, load_candidates

    task = Task(id="by-ref", train=[{"input": [[1, 2]], "output": [[2, 1]]}], test=[{"input": [[3, 4]]}])
    sampled = SampleResult(task_id=task.id, completions=[{"text": "def transform(grid):\n    return grid[:, ::-1]"}])
    result = send_execute(replay_cluster.app, sampled, ExecuteRequest(task=task))
    payload = result.get(timeout=60)
    assert set(payload) == {"task_id", "skipped", "sample_seconds", "count", "candidates_ref"} and payload["count"] == 1
    [cand] = load_candidates(payload["candidates_ref"])
    assert cand.execution.all_train_correct and cand.execution.test[0].output == [[4, 3]]
    drop(payload["candidates_ref"])
    result.forget()


def test_refinement_corrects_the_best_program_shown_its_feedback(replay_cluster, tmp_path):
    """--samples 1 gives each task a 180-degree flip. 74dd1130 (a transpose) is then refined: the
    correction solves it. 67a3c6ac gets no correction back, so its one round ends the task."""
    tasks = "74dd1130,67a3c6ac"
    plain = tmp_path / "plain"
    cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", tasks, "--samples", "1", "--out", str(plain), "--wait")
    assert json.loads((plain / "score.json").read_text())["tasks"] == {"74dd1130": 0.0, "67a3c6ac": 0.0}

    out = tmp_path / "refined"
    r = cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", tasks, "--samples", "1", "--refine", "2",
            "--refine-samples", "1", "--out", str(out), "--wait")
    assert "score: 0.500 over 2 tasks" in r.stdout
    cands = [Candidate.model_validate_json(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    by_task = {t: [c for c in cands if c.task_id == t] for t in tasks.split(",")}
    first, fix = by_task["74dd1130"]
    assert first.parent == "" and fix.parent == first.execution.fingerprint  # the fix names what it corrects
    assert fix.execution.all_train_correct and not first.execution.all_train_correct
    assert [c.parent for c in by_task["67a3c6ac"]] == [""]  # one round asked, nothing came back
    records = {json.loads(line)["task_id"]: json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()}
    assert records["74dd1130"]["per_epoch"]["0"]["candidates"] == 2
    assert {r["status"] for r in records.values()} == {"done"}


def test_refinement_and_augmentation_together_are_refused(replay_cluster, tmp_path):
    r = cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", "74dd1130", "--refine", "1", "--augment",
            "--out", str(tmp_path / "x"), check=False)
    assert r.returncode == 2 and "option --refine: cannot be combined with --augment" in r.stderr
    assert not (tmp_path / "x").exists()


def test_track_mlflow_logs_the_finished_runs_settings_and_score(replay_cluster, producers, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a local folder store only so
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    out = tmp_path / "tracked"
    env = {"MLFLOW_TRACKING_URI": f"file:{store}"}
    r = cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", "6150a2bd,007bbfb7", "--samples", "2",
            "--track", "mlflow", "--out", str(out), env=env)
    producers.append(r.stdout.strip().splitlines()[-1])
    client = MlflowClient(tracking_uri=f"file:{store}")

    def logged():
        exps = [e for e in client.search_experiments() if e.name == "arcsynth"]
        return bool(exps) and bool(client.search_runs([exps[0].experiment_id]))

    wait_until(logged, 120, "the producer to log the run to MLflow")
    (exp,) = [e for e in client.search_experiments() if e.name == "arcsynth"]
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["model"] == "smollm2" and run.data.params["sampling.n"] == "2"
    assert run.data.metrics["score"] == 0.5  # the flip solves 6150a2bd, nothing solves 007bbfb7
