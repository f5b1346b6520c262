"""`arcsynth local`, the embedded default: it runs, reports, and leaves nothing running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil
import pytest

from common.data import load_tasks
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster


def _task_dir(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    for task in load_tasks("arc-agi-1/training", task_ids=["6150a2bd", "74dd1130"]):
        (folder / f"{task.id}.json").write_text(json.dumps(task.model_dump(exclude={"id"})))
    return folder


def test_local_runs_and_stops_everything(smollm2, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "local", str(_task_dir(tmp_path)), "--samples", "2",
         "--max-tokens", "48", "--model", "smollm2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "score: " in stdout and f"submission: {out / 'submission.json'}" in stdout
    assert json.loads((out / "score.json").read_text())["tasks"].keys() == {"6150a2bd", "74dd1130"}
    assert len((out / "candidates.jsonl").read_text().splitlines()) == 4
    assert not me.is_running() or me.status() == psutil.STATUS_ZOMBIE


def test_ctrl_c_stops_every_process_it_started(smollm2, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "local", str(_task_dir(tmp_path)), "--samples", "64",
         "--max-tokens", "512", "--model", "smollm2", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The run has begun once the cluster is up and the producer has written run.json.
        for line in proc.stderr:
            if "starting a local cluster" in line:
                break
        wait_until(lambda: (out / "run.json").exists() or proc.poll() is not None, 300, "the run to start")
        assert proc.poll() is None, "arcsynth local exited before the run started"
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("EngineCore" in " ".join(p.cmdline()) for p in family)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        assert proc.returncode != 0
    finally:
        proc.kill()
