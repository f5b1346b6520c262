"""Both schools of search and learn on the replay cluster (fixed programs, a real fine-tune worker
training tiny SmolLM2 adapters): run-scope learning with windows and resume, and early stopping."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from arcsynth.common.models import Candidate
from arcsynth.producer.cluster import worker_name
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState
from tests.support import cli, wait_until

TASKS = "6150a2bd,74dd1130,007bbfb7"  # the flip solves the first, the transpose the second, nothing the third
RUN_SCOPE = ["--epochs", "1", "--learn-scope", "run", "--keep-searching", "--finetune-steps", "2", "--samples", "2",
             "--max-active", "1", "--select", "diverse", "--select-k", "1"]
ON_SMOLLM2 = {"ARCSYNTH_MODEL": "smollm2"}  # the model the replay worker stands in for, and the adapters' base


def candidates(out: Path) -> list[Candidate]:
    return [Candidate.model_validate_json(line) for line in (out / "candidates.jsonl").read_text().splitlines()]


def test_run_scope_trains_one_adapter_per_epoch_on_every_task_and_every_task_samples_through_it(
        replay_cluster, smollm2, tmp_path):
    """One task in flight at a time (--max-active 1): every task still finishes epoch 0 before the
    run's adapter is trained on all of them, and every task's epoch 1 samples through it."""
    out = tmp_path / "run"
    cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", TASKS, *RUN_SCOPE, "--out", str(out), "--wait",
        env=ON_SMOLLM2, timeout=600)
    cands = candidates(out)
    (adapter,) = {c.adapter for c in cands if c.epoch == 1}
    assert {c.adapter for c in cands if c.epoch == 0} == {""}
    assert {c.task_id for c in cands if c.epoch == 1} == set(TASKS.split(","))
    manifest = json.loads((Path(adapter) / "arcsynth_manifest.json").read_text())
    learning = RunDir(out).learning(0)
    assert manifest["sources"] == {t: len(learning[t]) for t in TASKS.split(",")}
    assert all(n >= 1 for n in manifest["sources"].values())
    assert json.loads((out / "run.json").read_text())["learn"]["scope"] == "run"


def test_run_scope_resumes_after_the_producer_is_killed_with_the_same_adapters_and_submission(
        replay_cluster, smollm2, tmp_path):
    whole = tmp_path / "whole"
    cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", TASKS, *RUN_SCOPE, "--out", str(whole), "--wait",
        env=ON_SMOLLM2, timeout=600)

    out = tmp_path / "killed"
    # Kill the producer while the run's fine-tune job is in flight (every task waits for its
    # adapter). A warm fine-tune worker trains 2 steps in about a second, so it is paused until then.
    finetune = replay_cluster.procs[worker_name("finetune")]
    finetune.send_signal(signal.SIGSTOP)
    try:
        r = cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", TASKS, *RUN_SCOPE, "--out", str(out),
                env=ON_SMOLLM2, timeout=60)
        run_id = r.stdout.strip().splitlines()[-1]
        import redis

        state = RunState(redis.Redis.from_url(replay_cluster.redis.url, decode_responses=True), run_id)
        wait_until(lambda: state.run_job() is not None and state.run_job().sent, 300, "the run's fine-tune job")
        os.kill(int(state.get("producer_pid")), signal.SIGKILL)
        wait_until(lambda: not state.producer_alive(), 60, "the producer to be seen dead")
    finally:
        finetune.send_signal(signal.SIGCONT)
    cli(replay_cluster, "resume", run_id, "--wait", env=ON_SMOLLM2, timeout=600)

    assert (out / "submission.json").read_text() == (whole / "submission.json").read_text()
    assert {c.adapter for c in candidates(out)} == {c.adapter for c in candidates(whole)}
    assert len(candidates(out)) == len(candidates(whole))  # nothing recorded twice


def test_stop_after_counts_distinct_train_perfect_programs(replay_cluster, tmp_path):
    """6150a2bd: the search finds the flip; asked to correct the transpose, the model writes the
    flip another way. --stop-after 1 stops at once, 2 after that one refinement; 3 is never
    reached, so REx refines until its rounds are used up."""
    def refinements(k: str, *extra: str) -> int:
        out = tmp_path / f"k{k}"
        cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", "6150a2bd", "--samples", "2", "--refine", "3",
            "--refine-samples", "1", "--stop-after", k, *extra, "--out", str(out), "--wait")
        return sum(1 for c in candidates(out) if c.parent)

    assert refinements("1") == 0
    assert refinements("2") == 1
    assert refinements("3", "--refine-strategy", "rex") == 3


def test_barc_prompt_format_extracts_and_calls_programs_as_barc_does(replay_cluster, tmp_path):
    """67a3c6ac's third replayed answer is a BARC-style program (`main(input_grid)` on a numpy
    array): under --prompt barc the execute worker extracts and calls it as BARC does and it solves
    the task; under arcsynth's format it is not a program (no `transform`)."""
    scores = {}
    for fmt in ("barc", "arcsynth"):
        out = tmp_path / fmt
        cli(replay_cluster, "submit", "arc-agi-1/training", "--tasks", "67a3c6ac", "--samples", "3", "--prompt", fmt,
            "--out", str(out), "--wait")
        scores[fmt] = json.loads((out / "score.json").read_text())["score"]
        assert json.loads((out / "run.json").read_text())["prompt_format"] == fmt
    assert scores == {"barc": 1.0, "arcsynth": 0.0}
    barc = [c for c in candidates(tmp_path / "barc") if c.code and "def main" in c.code]
    assert len(barc) == 1 and barc[0].execution.all_train_correct
