"""Supervision where arcsynth starts the workers itself (`arcsynth local`, `arcsynth workers`).

A worker SIGKILLed mid-run (as the OOM killer would) is restarted, the jobs it had taken go back
on its queue at once, and the run completes with every task scored once. A worker that keeps
dying stops the run with one line naming it, its exit code and its log's end, within a bounded
time. Each test starts its own `arcsynth local` (or cluster) on the replay backend: no model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from arcsynth.common.data import load_tasks
from arcsynth.producer.cluster import ClusterError, LocalCluster
from arcsynth.producer.redis_server import RedisServer
from tests.support import SLOW, SLOW_DATASET, fenced, wait_until

pytestmark = pytest.mark.cluster
HOST = socket.gethostname()


def _replay(path: Path, n: int) -> list[str]:
    ids = [t.id for t in load_tasks(SLOW_DATASET, limit=n)]
    path.write_text("".join(json.dumps({"task_id": tid, "text": fenced(SLOW)}) + "\n" for tid in ids))
    return ids


def _env(tmp_path: Path, replay: Path) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "10",
            "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "TMPDIR": str(tmp_path / "tmp")}


class Local:
    """`arcsynth local` in the background, its stderr in a file, every process it ever started recorded."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        self.stderr_path = tmp_path / "local.stderr"
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "arcsynth.producer", "local", SLOW_DATASET, *args],
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        self.family: dict[int, psutil.Process] = {}

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def worker(self, kind: str) -> psutil.Process:
        """The live main process of the `kind` worker (its pool processes are its children). Celery
        retitles it (`[celeryd: inference-1@host:MainProcess] ... (worker inference --index 1)`)."""
        found: list[psutil.Process] = []

        def look() -> bool:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.family.setdefault(child.pid, child)
            for child in psutil.Process(self.proc.pid).children():
                try:
                    if f"worker {kind} --index" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                        found[:] = [child]
                except psutil.NoSuchProcess:
                    continue
            return bool(found) or self.proc.poll() is not None

        wait_until(look, 120, f"a {kind} worker", interval=0.2)
        assert found, (self.proc.returncode, self.stderr[-3000:])
        return found[0]

    def kill(self, kind: str) -> int:
        victim = self.worker(kind)
        self.family.update({p.pid: p for p in victim.children(recursive=True)})
        victim.send_signal(signal.SIGKILL)
        return victim.pid

    def finish(self, timeout: float) -> str:
        try:
            stdout, _ = self.proc.communicate(timeout=timeout)
        finally:
            self.proc.kill()
        _, alive = psutil.wait_procs(list(self.family.values()), timeout=60)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]  # nothing it started outlives it
        return stdout


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigkilled_execute_and_inference_workers_are_restarted_and_the_run_completes(tmp_path):
    ids = _replay(tmp_path / "programs.jsonl", 24)
    out = tmp_path / "run"
    local = Local(tmp_path, _env(tmp_path, tmp_path / "programs.jsonl"), "--limit", "24", "--samples", "1",
                  "--max-active", "2", "--out", str(out))
    try:
        local.worker("finetune")  # record every worker while the cluster starts
        wait_until(lambda: len(_lines(out / "tasks.jsonl")) >= 2 or local.proc.poll() is not None, 240, "two tasks done")
        first = local.kill("execute")
        assert len(_lines(out / "tasks.jsonl")) < 24  # killed mid-run
        wait_until(lambda: local.worker("execute").pid != first, 60, "execute to be restarted")
        local.kill("inference")
        assert len(_lines(out / "tasks.jsonl")) < 24
        stdout = local.finish(timeout=300)
    finally:
        local.proc.kill()
    stderr = local.stderr
    assert local.proc.returncode == 0, stderr[-3000:]
    assert f"worker execute-1@{HOST} exited (killed by SIGKILL (exit code -9)); restarting it in 1 s" in stderr
    assert f"worker inference-1@{HOST} exited (killed by SIGKILL (exit code -9)); restarting it in 1 s" in stderr
    # Redelivered at once, not after hours: put back from the killed worker's unacked jobs, or, when
    # the kill fell between the worker's pop of the message and its record as unacked (the broker
    # then holds it nowhere), sent again by the producer's lost-job watchdog.
    assert (f"of execute-1@{HOST} put back on its queue" in stderr
            or "the broker lost its message; sent again under the same id" in stderr), stderr[-3000:]
    records = _lines(out / "tasks.jsonl")
    assert sorted(r["task_id"] for r in records) == sorted(ids) and {r["status"] for r in records} == {"done"}
    per_task = Counter(c["task_id"] for c in _lines(out / "candidates.jsonl"))
    assert per_task == {tid: 1 for tid in ids}  # every task scored once, no duplicate candidates
    assert f"submission: {out / 'submission.json'}" in stdout
    assert list((tmp_path / "tmp").glob("arcsynth-cluster-*")) == []  # a successful run leaves no log folder


def test_an_inference_worker_that_keeps_dying_stops_the_run_in_one_line(tmp_path):
    """Mid-run the replay file goes and the worker is killed: each restart exits with code 3 at
    start; after 3 restarts `local` cancels the run and exits 1 with one line, keeping the logs."""
    replay = tmp_path / "programs.jsonl"
    _replay(replay, 8)
    out = tmp_path / "run"
    local = Local(tmp_path, _env(tmp_path, replay), "--limit", "8", "--samples", "1", "--max-active", "1",
                  "--out", str(out))
    try:
        local.worker("finetune")
        wait_until(lambda: len(_lines(out / "tasks.jsonl")) >= 1 or local.proc.poll() is not None, 240, "a task done")
        replay.rename(tmp_path / "gone.jsonl")
        local.kill("inference")
        killed = time.monotonic()
        local.finish(timeout=180)
    finally:
        local.proc.kill()
    assert time.monotonic() - killed < 150
    lines = local.stderr.strip().splitlines()
    assert local.proc.returncode == 1, lines[-20:]
    assert lines[-1].startswith(f"error: worker inference-1@{HOST} exited 4 times in 60 s, last with exit code 3; "
                                "not restarting it; its log ends: ")
    assert lines[-1].endswith(f"arcsynth inference worker: cannot load the replay file {str(replay)!r}: replay file "
                              f"{replay}: cannot read: No such file or directory")
    kept = list((tmp_path / "tmp").glob("arcsynth-cluster-*"))
    assert len(kept) == 1 and lines[-2] == f"arcsynth: worker logs kept in {kept[0]}"
    assert (kept[0] / "inference.log").read_text().count("--- arcsynth supervisor: restart") == 3
    records = _lines(out / "tasks.jsonl")
    assert len(records) == 8 and "cancelled" in {r["status"] for r in records}  # the rest cancelled, results written
    assert (out / "submission.json").exists()


def test_a_cluster_whose_worker_cannot_start_gives_up_in_one_line(tmp_path):
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(tmp_path / "gone.jsonl"),
           "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts")}
    started = time.monotonic()
    with pytest.raises(ClusterError) as exc:
        LocalCluster(model="replay", kinds=("inference",), env=env, log_dir=tmp_path / "logs", ready_timeout=120,
                     supervise=True, max_restarts=2, backoff_s=0.2).start()
    assert time.monotonic() - started < 100
    line = str(exc.value)
    assert "\n" not in line and line.startswith(f"worker inference-1@{HOST} exited 3 times in 60 s, last with exit code 3")
    assert "cannot load the replay file" in line and "gone.jsonl: cannot read: No such file" in line


@pytest.fixture
def broker():
    with RedisServer() as server:
        yield server


def _workers(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "arcsynth.producer", "workers", "inference", "--gpus", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_arcsynth_workers_restarts_a_killed_worker_and_stops_gracefully(broker, tmp_path):
    from celery import Celery

    _replay(tmp_path / "programs.jsonl", 1)
    env = {**_env(tmp_path, tmp_path / "programs.jsonl"), "ARCSYNTH_BROKER_URL": broker.url}
    proc = _workers(env)
    app = Celery(broker=broker.url)
    name = f"inference-1@{HOST}"
    try:
        wait_until(lambda: bool(app.control.ping(destination=[name], timeout=1.0)), 120, "the worker to answer")
        (first,) = psutil.Process(proc.pid).children()
        first.send_signal(signal.SIGKILL)
        wait_until(lambda: [p.pid for p in psutil.Process(proc.pid).children()] not in ([], [first.pid]), 60, "a restart")
        (second,) = psutil.Process(proc.pid).children()
        wait_until(lambda: bool(app.control.ping(destination=[name], timeout=1.0)), 120, "the new worker to answer")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        app.close()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"worker {name} exited (killed by SIGKILL (exit code -9)); restarting it" in stderr
    assert not second.is_running()  # stopped with the supervisor


def test_arcsynth_workers_gives_up_on_a_worker_that_keeps_dying(broker, tmp_path):
    env = {**_env(tmp_path, tmp_path / "gone.jsonl"), "ARCSYNTH_BROKER_URL": broker.url}
    started = time.monotonic()
    proc = _workers(env)
    try:
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        proc.kill()
    assert time.monotonic() - started < 150
    last = stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, stderr[-3000:]
    assert last.startswith(f"error: worker inference-1@{HOST} exited 4 times in 60 s, last with exit code 3")
    assert last.endswith("gone.jsonl: cannot read: No such file or directory")
    assert "cannot load the replay file" in stdout  # the workers' own output is passed through


def test_arcsynth_workers_gives_each_worker_its_group_of_gpus(broker, tmp_path):
    """`workers inference --gpus 0,1,2,3 --tp 2` starts two workers, inference-1 bound to GPUs 0,1 and
    inference-3 to 2,3, each with a tensor parallel size of 2. There is no GPU here: the replay backend
    never initialises CUDA, so this checks each worker's environment, not vLLM across GPUs. Celery
    retitles a worker (setproctitle reuses the memory /proc/PID/environ shows), so each worker's
    environment is read from the line it writes at its start, from its own os.environ and settings."""
    from celery import Celery

    _replay(tmp_path / "programs.jsonl", 1)
    env = {**_env(tmp_path, tmp_path / "programs.jsonl"), "ARCSYNTH_BROKER_URL": broker.url}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("ARCSYNTH_TENSOR_PARALLEL_SIZE", None)
    proc = subprocess.Popen([sys.executable, "-m", "arcsynth.producer", "workers", "inference", "--gpus", "0,1,2,3",
                             "--tp", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    app = Celery(broker=broker.url)
    names = [f"inference-1@{HOST}", f"inference-3@{HOST}"]
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: len(app.control.ping(destination=names, timeout=1.0)) == 2, 180, "both workers to answer")
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        app.close()
    assert proc.returncode == 0, stderr[-3000:]
    said = sorted(line for line in stdout.splitlines() if line.startswith("arcsynth worker inference-"))
    assert said == [
        "arcsynth worker inference-1: CUDA_VISIBLE_DEVICES=0,1, ARCSYNTH_TENSOR_PARALLEL_SIZE=2; its engine spans 2 GPU(s)",
        "arcsynth worker inference-3: CUDA_VISIBLE_DEVICES=2,3, ARCSYNTH_TENSOR_PARALLEL_SIZE=2; its engine spans 2 GPU(s)",
    ], stdout[-3000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]  # stopped with the supervisor
