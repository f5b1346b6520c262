"""Several models in one run: each served by its own inference worker on its own queue, their
programs pooled in one vote.

Through `arcsynth local` on the replay backend: each record of the replay file names the model
whose worker serves it, so the two "models" answer differently, as two real models would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support import fenced

pytestmark = pytest.mark.cluster

# Flip each row. Train grids are 2x2; the test grid is 1x3 and its right answer is [[3, 2, 1]].
TASK = {"train": [{"input": [[1, 2], [3, 4]], "output": [[2, 1], [4, 3]]},
                  {"input": [[5, 6], [7, 8]], "output": [[6, 5], [8, 7]]}],
        "test": [{"input": [[1, 2, 3]], "output": [[3, 2, 1]]}]}


def flip_but_on_the_test(colour: int | None) -> str:
    """A program right on every train pair whose test answer is all `colour` (None: the right flip)."""
    odd = "" if colour is None else f"\n    if out.shape == (1, 3):\n        out = out * 0 + {colour}"
    return f"def transform(grid):\n    import numpy as np\n    out = np.array(grid)[:, ::-1]{odd}\n    return out"


# Alone, each model's two most voted answers are wrong (3 + 3 votes against 2 for the flip);
# pooled, the flip has 4 votes and comes first.
VOTES = {"alpha": [(5, 3), (6, 3), (None, 2)], "beta": [(7, 3), (8, 3), (None, 2)]}


def _replay(path: Path) -> Path:
    with open(path, "w") as f:
        for model, answers in VOTES.items():
            for colour, times in answers:
                for _ in range(times):
                    f.write(json.dumps({"task_id": "pooled", "model": model,
                                        "text": fenced(flip_but_on_the_test(colour))}) + "\n")
    return path


def _local(tmp_path: Path, out: Path, *models: str) -> subprocess.CompletedProcess:
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "pooled.json").write_text(json.dumps(TASK))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(_replay(tmp_path / "replay.jsonl")),
           "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "TMPDIR": str(tmp_path / "tmp")}
    args = [a for m in models for a in ("--model", m)]
    return subprocess.run([sys.executable, "-m", "arcsynth.producer", "local", str(tasks), *args, "--samples", "8",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)


def test_two_models_pool_their_programs_in_one_vote(tmp_path):
    alone = _local(tmp_path, tmp_path / "alone", "alpha")
    assert alone.returncode == 0, alone.stderr
    assert "score: 0.000" in alone.stdout  # alpha's own vote picks two wrong answers

    both = _local(tmp_path, tmp_path / "both", "alpha", "beta")
    assert both.returncode == 0, both.stderr
    assert "score: 1.000" in both.stdout
    candidates = [json.loads(line) for line in (tmp_path / "both" / "candidates.jsonl").read_text().splitlines()]
    assert Counter(c["model"] for c in candidates) == {"alpha": 8, "beta": 8}
    submission = json.loads((tmp_path / "both" / "submission.json").read_text())
    assert submission["pooled"][0]["attempt_1"] == [[3, 2, 1]]
    run = json.loads((tmp_path / "both" / "run.json").read_text())
    assert (run["model"], run["models"]) == ("alpha", ["alpha", "beta"])

    from arcsynth.producer.summary import summarise

    summary = summarise(tmp_path / "both")
    assert {m: (t.candidates, t.train_correct, t.solved) for m, t in summary.per_model.items()} == {
        "alpha": (8, 8, 1), "beta": (8, 8, 1)}
    assert {c.model for c in summary.curves} == {"alpha", "beta"}  # pass@n curves by model too
    report = subprocess.run([sys.executable, "-m", "arcsynth.producer", "report", str(tmp_path / "both")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "both" / "report.html").read_text()
    assert 'id="models"' in page and page.count('class="run-model"') == 2


def _copy_of(smollm2: str, folder: Path) -> str:
    """SmolLM2 under another folder (its files linked, not copied): to arcsynth, another model."""
    folder.mkdir()
    for f in Path(smollm2).iterdir():
        (folder / f.name).symlink_to(f)
    return str(folder)


@pytest.mark.parametrize("scope", ["task", "run"])
def test_each_model_learns_through_its_own_adapter(smollm2, tmp_path, scope):
    """Replayed programs (so every model has programs to learn from) and a real fine-tune worker:
    with --epochs 1, each model's epoch-1 candidates name an adapter trained on that model, from
    that model's own programs (per task, or one adapter per model for the whole run)."""
    from tests.support import FLIP, TRANSPOSE

    other = _copy_of(smollm2, tmp_path / "other-smollm2")
    replay = tmp_path / "learn-replay.jsonl"
    with open(replay, "w") as f:
        for model, code in (("smollm2", FLIP), (other, TRANSPOSE)):
            f.write(json.dumps({"task_id": "6150a2bd", "model": model, "text": fenced(code)}) + "\n")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay),
           "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "TMPDIR": str(tmp_path / "tmp")}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "local", "arc-agi-1/training", "--tasks", "6150a2bd",
                        "--model", "smollm2", "--model", other, "--samples", "1", "--epochs", "1", "--keep-searching",
                        "--finetune-steps", "2", "--learn-scope", scope, "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    cands = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert Counter((c["model"], c["epoch"]) for c in cands) == {("smollm2", 0): 1, (other, 0): 1,
                                                                  ("smollm2", 1): 1, (other, 1): 1}
    by_model = {c["model"]: c["adapter"] for c in cands if c["epoch"] == 1}
    assert all(by_model.values()) and len(set(by_model.values())) == 2
    for model, adapter in by_model.items():
        manifest = json.loads((Path(adapter) / "arcsynth_manifest.json").read_text())
        assert manifest["base_model"] == model
        assert manifest["sources"] == {"6150a2bd": 1}


def test_two_vllm_engines_each_serve_their_model(smollm2, tmp_path):
    """SmolLM2 and a copy of it under another folder, each served by its own vLLM worker."""
    other = _copy_of(smollm2, tmp_path / "other-smollm2")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "pooled.json").write_text(json.dumps(TASK))
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "TMPDIR": str(tmp_path / "tmp"),
           "ARCSYNTH_MAX_MODEL_LEN": "4096", "ARCSYNTH_EXEC_TIMEOUT_S": "2"}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "local", str(tasks), "--model", "smollm2",
                        "--model", other, "--samples", "3", "--max-tokens", "32", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    cands = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert Counter(c["model"] for c in cands) == {"smollm2": 3, other: 3}
    assert all(c["completion"]["completion_tokens"] > 0 for c in cands)


def test_status_counts_by_model_and_names_the_model_nobody_serves(tmp_path):
    """smollm2 has its (replay) worker, `ghost` none: submit warns, status counts smollm2's
    candidates and names ghost's queue, and the run ends at its --timeout instead of hanging. On a
    cluster of its own: the revoked ghost jobs leave Redis state no other test should meet."""
    from arcsynth.common.redis_client import redis_client
    from arcsynth.producer.cluster import LocalCluster
    from arcsynth.producer.runstate import RunState
    from tests.support import FLIP, cli, wait_until

    replay = tmp_path / "replay.jsonl"
    replay.write_text(json.dumps({"task_id": "6150a2bd", "text": fenced(FLIP)}) + "\n")
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay),
           "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "ARCSYNTH_RUN_ROOT": str(tmp_path / "runs")}
    with LocalCluster(model="smollm2", kinds=("execute", "inference"), env=env, log_dir=tmp_path / "logs",
                      ready_timeout=120) as cluster:
        out = tmp_path / "run"
        submitted = cli(cluster, "submit", "arc-agi-1/training", "--tasks", "6150a2bd", "--model", "smollm2",
                        "--model", "ghost", "--samples", "2", "--timeout", "15", "--out", str(out), timeout=120)
        run_id = submitted.stdout.strip().splitlines()[0]
        ghost = "no worker consumes inference.ghost (inference worker for model ghost)"
        assert f"warning: {ghost}; the run waits for one" in submitted.stderr
        state = RunState(redis_client(cluster.redis.url), run_id)
        wait_until(lambda: int(state.get("candidates") or 0) == 1, 60, "smollm2's candidates")
        status = cli(cluster, "status", run_id, timeout=120).stdout
        assert "candidates: 1 (smollm2: 1)" in status.splitlines(), status
        assert ghost in status.splitlines(), status
        waited = cli(cluster, "wait", run_id, timeout=120)
        assert "done: submission" in waited.stdout
    (record,) = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert (record["status"], record["reason"]) == ("failed", "timed out")
    assert not list((tmp_path / "artifacts" / "payloads").iterdir())  # smollm2's payload went with the stop
