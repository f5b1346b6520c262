"""`arcsynth local`, the embedded default: it runs, reports, and leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from arcsynth.common.data import load_tasks
from tests.support import wait_until

pytestmark = pytest.mark.cluster


def _task_dir(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    for task in load_tasks("arc-agi-1/training", task_ids=["6150a2bd", "74dd1130"]):
        (folder / f"{task.id}.json").write_text(json.dumps(task.model_dump(exclude={"id"})))
    return folder


def _sigint_as_at_a_terminal() -> None:
    """A suite started in the background (`make test &`) inherits SIGINT ignored, and Python then
    keeps ignoring it; a person pressing Ctrl-C at a terminal never has that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _local(tmp_path, out, samples: int, max_tokens: int, stdout=subprocess.PIPE, group: bool = False) -> subprocess.Popen:
    """`group`: in a process group of its own, as a shell's foreground command is."""
    return subprocess.Popen(
        [sys.executable, "-m", "arcsynth.producer", "local", str(_task_dir(tmp_path)), "--samples", str(samples),
         "--max-tokens", str(max_tokens), "--model", "smollm2", "--out", str(out)],
        stdout=stdout, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_as_at_a_terminal,
        process_group=0 if group else None)


def _watch_family(proc: subprocess.Popen, family: dict[int, psutil.Process]) -> threading.Thread:
    """Record every descendant `proc` ever has, until it exits (a worker may start late).

    It waits on `proc` through Popen's own `wait`, never psutil's: psutil reaps a child of this
    process behind Popen's back, and Popen then takes the lost status for an exit code of 0."""
    def watch() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for child in root.children(recursive=True):
                    family.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                break
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_local_runs_and_stops_everything(smollm2, tmp_path):
    out = tmp_path / "run"
    proc = _local(tmp_path, out, samples=2, max_tokens=48)
    family: dict[int, psutil.Process] = {}
    watcher = _watch_family(proc, family)
    try:
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        proc.kill()
    watcher.join(timeout=10)
    assert proc.returncode == 0, stderr[-3000:]
    assert "score: " in stdout and f"submission: {out / 'submission.json'}" in stdout
    assert json.loads((out / "score.json").read_text())["tasks"].keys() == {"6150a2bd", "74dd1130"}
    assert len((out / "candidates.jsonl").read_text().splitlines()) == 4
    assert len(family) >= 5, family  # Redis, three workers, an engine core at least
    _, alive = psutil.wait_procs(list(family.values()), timeout=60)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_cancels_the_run_writes_its_results_and_stops_every_process(smollm2, tmp_path, signum):
    """Ctrl-C at a terminal (SIGINT to the whole foreground group) or a SIGTERM: the run is cancelled as
    `arcsynth cancel` would (its tasks recorded, the submission written with placeholders), every
    process it started stops, and the command exits 128 + the signal's number. The workers are in a
    group of their own: the terminal's signal is not theirs to act on mid-run."""
    out = tmp_path / "run"
    proc = _local(tmp_path, out, samples=64, max_tokens=512, stdout=subprocess.DEVNULL, group=True)
    try:
        # The run has begun once the cluster is up and the producer has written run.json.
        for line in proc.stderr:
            if "starting a local cluster" in line:
                break
        wait_until(lambda: (out / "run.json").exists() or proc.poll() is not None, 300, "the run to start")
        assert proc.poll() is None, "arcsynth local exited before the run started"
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("EngineCore" in " ".join(p.cmdline()) for p in family)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # as a terminal sends it: to the command's whole process group
        else:
            proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=180)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        assert proc.returncode == 128 + signum, stderr[-3000:]
        assert f"{signal.Signals(signum).name}: cancelling the run and writing its results" in stderr
        records = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
        assert sorted(r["task_id"] for r in records) == ["6150a2bd", "74dd1130"]
        assert {r["status"] for r in records} <= {"cancelled", "done"}, records
        assert json.loads((out / "submission.json").read_text()).keys() == {"6150a2bd", "74dd1130"}
    finally:
        proc.kill()


def test_a_chat_prompt_for_a_model_without_a_chat_template_is_refused_before_anything_starts(tmp_path, smollm2):
    """A copy of SmolLM2 whose tokenizer lost its chat template stands in for a base model."""
    import shutil

    base = tmp_path / "base-model"
    shutil.copytree(smollm2, base)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "chat_template.json"):
        (base / name).unlink(missing_ok=True)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}))
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "local", str(path), "--model", str(base),
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "has no chat template" in lines[0] and "--prompt base" in lines[0]
    assert not (tmp_path / "run").exists()


def test_sigterm_while_the_cluster_starts_stops_what_it_started(tmp_path):
    """Before the run begins there is nothing to cancel: a SIGTERM (a CI runner, `timeout`, systemd)
    stops the workers and the private Redis as Ctrl-C does, says where their logs are kept, and
    removes Redis's folder, instead of killing the command and orphaning them. An inference worker
    held stopped keeps the cluster starting while the signal comes (the replay backend: no model)."""
    replay = tmp_path / "programs.jsonl"
    replay.write_text(json.dumps({"task_id": "6150a2bd", "text": "```python\ndef transform(grid):\n    return grid\n```"}))
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "TMPDIR": str(tmp_path / "tmp")}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "arcsynth.producer", "local", str(_task_dir(tmp_path)), "--samples", "1",
                             "--model", "smollm2", "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, process_group=0)
    family: dict[int, psutil.Process] = {}
    watcher = _watch_family(proc, family)
    held: list[psutil.Process] = []
    try:
        def inference_started() -> bool:
            held[:] = [p for p in list(family.values()) if "worker inference" in " ".join(p.cmdline())]
            return bool(held) or proc.poll() is not None

        wait_until(inference_started, 120, "the inference worker to start")
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        held[0].suspend()
        proc.send_signal(signal.SIGTERM)
        held[0].resume()
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    watcher.join(timeout=10)
    assert proc.returncode == 1, stderr[-3000:]
    assert "arcsynth: worker logs kept in " in stderr
    assert not (out / "run.json").exists()
    _, alive = psutil.wait_procs(list(family.values()), timeout=60)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert not list((tmp_path / "tmp").glob("arcsynth-redis-*"))
