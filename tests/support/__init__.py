"""What tests share: waiting on conditions, test adapters, the fixed programs replay clusters serve."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ARCSYNTH = [sys.executable, "-m", "arcsynth.producer"]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def untrained_adapter(base_model: str, path: Path, rank: int) -> str:
    """A fresh LoRA: peft initialises B to zero, so it must leave the base model's outputs unchanged."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model),
                           LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(path)
    return str(path)


# Two ARC tasks and their programs: what the `taught` adapter learns.
PROGRAMS = {"6150a2bd": "def transform(grid):\n    return grid[::-1, ::-1]",
            "74dd1130": "def transform(grid):\n    return grid.T"}


def teach_request():
    from arcsynth.common.data import load_tasks
    from arcsynth.common.models import FinetuneRequest, LoraConfig, TrainConfig, TrainingExample
    from arcsynth.common.prompts import format_completion, task_messages

    tasks = load_tasks("arc-agi-1/training", task_ids=list(PROGRAMS))
    examples = [TrainingExample(messages=task_messages(t), completion=format_completion(PROGRAMS[t.id]))
                for t in tasks]
    return FinetuneRequest(base_model="smollm2", examples=examples, lora=LoraConfig(rank=8, alpha=16),
                           train=TrainConfig(steps=40, batch_size=1, learning_rate=2e-3))


# The replay cluster's fixed programs (no model, no GPU).
FLIP = "def transform(grid):\n    return grid[::-1, ::-1]"  # solves 6150a2bd
TRANSPOSE = "def transform(grid):\n    return grid.T"  # solves 74dd1130
FLIP_AGAIN = "def transform(grid):\n    return grid[::-1][:, ::-1]"  # the same flip, written otherwise
BARC_FLIP_LR = ("import numpy as np\n\n# concepts:\n# mirror\n\ndef main(input_grid):\n"
                "    # mirror the grid left to right\n    return np.fliplr(input_grid)")
# Sleeps once per run (a run is one process over all of a task's inputs), then answers unchanged.
SLOW = ("import time\n_slept = []\n\ndef transform(grid):\n    if not _slept:\n"
        "        _slept.append(time.sleep(1.0))\n    return grid")
SLOW_DATASET = "arc-agi-1/evaluation"  # its tasks get one slow program each, to catch runs mid-way


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def run_in_process(app, tasks, config, run_dir: Path):
    """Create a run and drive it in this process (as `arcsynth local` does); returns its RunOutcome."""
    from arcsynth.common.redis_client import redis_client
    from arcsynth.producer.run import Producer, start_run
    from arcsynth.producer.runstate import RunState

    state = RunState(redis_client(app.conf.broker_url), config.run_id)
    return Producer(app, start_run(run_dir, config, tasks, state), state).run()


def cli(cluster, *args, timeout=300, check=True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`arcsynth ARGS` against `cluster` (its broker in the environment); asserts success unless `check=False`."""
    r = subprocess.run([*ARCSYNTH, *args], capture_output=True, text=True, env={**cluster.env, **(env or {})},
                       timeout=timeout)
    if check:
        assert r.returncode == 0, f"arcsynth {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    return r


def assert_user_error(r: subprocess.CompletedProcess, fragments: list[str]) -> None:
    """A command refused its input as a user error: exit 2, one short line `error: …` holding every fragment."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(r.stderr) < 1000, r.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
