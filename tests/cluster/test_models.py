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
