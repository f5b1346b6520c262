"""A program in BARC's style, importing a DSL (`from common import *`) whose helpers import scipy,
solves its task through the real execute worker (`arcsynth local --prompt barc` on the replay
backend, ARCSYNTH_EXEC_DSL and ARCSYNTH_EXEC_PACKAGES=scipy) with the outputs its `main` gives
when called directly.

The DSL is tests/support/barc_style/common.py, written for these tests in the style of BARC's
(BARC's own file is not shipped here; the README says where to get it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import fenced

pytestmark = pytest.mark.cluster
DSL = Path(__file__).resolve().parents[1] / "support" / "barc_style" / "common.py"

PROGRAM = '''from common import *
import numpy as np

# concepts:
# objects, cropping, framing

# description:
# The input holds several objects of one colour each. Keep the largest one, crop it, and draw it
# on a black canvas one cell larger on every side.

def main(input_grid):
    objects = find_connected_components(input_grid, background=Color.BLACK, connectivity=8, monochromatic=True)
    biggest = max(objects, key=object_area)
    sprite = crop(biggest, background=Color.BLACK)
    canvas = np.full((sprite.shape[0] + 2, sprite.shape[1] + 2), Color.BLACK)
    return blit_sprite(canvas, sprite, x=1, y=1, background=Color.BLACK)
'''

INPUTS = [
    [[0, 0, 0, 0, 0, 0], [0, 2, 2, 0, 0, 0], [0, 2, 0, 0, 3, 0], [0, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0]],
    [[1, 0, 0, 0, 0], [0, 0, 6, 6, 6], [0, 0, 0, 6, 0], [0, 8, 0, 0, 0], [0, 8, 0, 0, 0]],
    [[0, 0, 0, 0, 0, 0, 0], [0, 7, 0, 0, 5, 5, 0], [7, 7, 7, 0, 0, 0, 0], [0, 7, 0, 0, 9, 0, 0]],
]


def _main_directly():
    sys.path.insert(0, str(DSL.parent))
    try:
        spec = importlib.util.spec_from_loader("barc_program", loader=None)
        module = importlib.util.module_from_spec(spec)
        exec(PROGRAM, module.__dict__)
    finally:
        sys.path.remove(str(DSL.parent))
        sys.modules.pop("common", None)
    return module.main


def test_a_barc_style_program_with_a_scipy_backed_dsl_solves_its_task_through_the_execute_worker(tmp_path):
    pytest.importorskip("scipy", reason="the barc extra: pip install 'arcsynth[barc]' (make install has it)")
    main = _main_directly()
    outputs = [main(np.array(g)).tolist() for g in INPUTS]
    task = {"train": [{"input": i, "output": o} for i, o in zip(INPUTS[:2], outputs[:2])],
            "test": [{"input": INPUTS[2], "output": outputs[2]}]}
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "barcdsl.json").write_text(json.dumps(task))
    replay = tmp_path / "replay.jsonl"
    replay.write_text(json.dumps({"task_id": "barcdsl", "text": "Let's solve this puzzle.\n\n" + fenced(PROGRAM)}) + "\n")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay),
           "ARCSYNTH_EXEC_DSL": str(DSL), "ARCSYNTH_EXEC_PACKAGES": "scipy",
           "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "TMPDIR": str(tmp_path / "tmp")}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "local", str(tasks), "--prompt", "barc",
                        "--samples", "1", "--model", "barc", "--out", str(out)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (cand,) = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    ex = cand["execution"]
    assert [p["error"] for p in ex["train"] + ex["test"]] == ["none"] * 3, ex
    assert [p["output"] for p in ex["train"] + ex["test"]] == outputs
    assert "score: 1.000" in r.stdout
