"""Orchestrate a run: per task, search → execute → (relabel → fine-tune → search again)*.

Each task moves through its own small state machine; the producer only routes results between
queues. With `epochs=0` this is plain search. Candidates are appended to `candidates.jsonl` as
they arrive; the run directory ends with `submission.json` (always valid: unfinished or skipped
tasks get placeholder attempts) and `score.json` when the test outputs are known.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery, chain
from celery.result import AsyncResult
from tqdm import tqdm

from common.augment import Augmentation, random_augmentation
from common.celery_app import EXECUTE, FINETUNE, SAMPLE
from common.models import Attempt, Candidate, FinetuneRequest, LoraConfig, RunConfig, SamplingConfig, Task, TrainConfig
from common.relabel import relabel
from common.scoring import score_run, select_attempts
from common.submission import write_json_atomic, write_submission


@dataclass(frozen=True)
class LearnConfig:
    """Search and learn: `epochs=0` is plain search."""

    epochs: int = 0
    samples_per_epoch: int = 8
    stop_when_solved: bool = True  # a program correct on every train pair ends the task's loop
    base_model: str = ""
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    max_examples: int | None = 64
    augment: bool = False  # each epoch's prompt shows a random rotation/reflection and colour map
    from_base: bool = False  # train each epoch's adapter from the base model, not the previous adapter


@dataclass
class RunOutcome:
    run_dir: Path
    submission: Path
    score: float | None
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    candidates: int = 0
    adapters: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _TaskState:
    task: Task
    epoch: int = 0
    adapter: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    stage: str = "search"
    result: AsyncResult | None = None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def enqueue_search(app: Celery, task: Task, sampling: SamplingConfig, adapter: str = "", epoch: int = 0,
                   augmentation: Augmentation | None = None):
    """Sample programs (from the augmented task, if any) and grade them on the original task."""
    shown = task if augmentation is None else augmentation.apply_task(task)
    return chain(
        app.signature(SAMPLE, args=(shown.model_dump(), sampling.model_dump(), adapter)),
        app.signature(EXECUTE, args=(task.model_dump(), epoch, augmentation.model_dump() if augmentation else None)),
    ).apply_async()


class _Run:
    def __init__(self, app, tasks, sampling, run_dir, adapter, learn: LearnConfig, progress: bool):
        self.app, self.sampling, self.learn = app, sampling, learn
        self.states = {t.id: _TaskState(task=t, adapter=adapter) for t in tasks}
        self.active: dict[str, _TaskState] = {}
        self.attempts: dict[str, list[Attempt]] = {}
        self.outcome = RunOutcome(run_dir=run_dir, submission=run_dir / "submission.json", score=None)
        self.cand_file = open(run_dir / "candidates.jsonl", "w")
        self.task_file = open(run_dir / "tasks.jsonl", "w")
        self.bar = tqdm(total=len(tasks), unit="task", disable=not progress, desc="tasks")

    def augmentation(self, st: _TaskState) -> Augmentation | None:
        if not self.learn.augment:
            return None
        return random_augmentation(random.Random(f"{st.task.id}:{st.epoch}"))

    def start(self) -> None:
        for st in self.states.values():
            st.result = enqueue_search(self.app, st.task, self.sampling, st.adapter, 0, self.augmentation(st))
            self.active[st.task.id] = st

    def poll(self) -> bool:
        progressed = False
        for st in list(self.active.values()):
            assert st.result is not None
            if not st.result.ready():
                continue
            progressed = True
            if not st.result.successful():
                self.finish(st, status="failed", reason=f"{st.stage}: {type(st.result.result).__name__}: {st.result.result}")
            elif st.stage == "search":
                self.on_search(st, st.result.get(disable_sync_subtasks=False))
            else:
                self.on_finetune(st, st.result.get(disable_sync_subtasks=False))
        return progressed

    def on_search(self, st: _TaskState, payload: dict) -> None:
        cands = [Candidate.model_validate(c) for c in payload["candidates"]]
        for c in cands:
            self.cand_file.write(c.model_dump_json() + "\n")
        self.cand_file.flush()
        st.candidates.extend(cands)
        self.outcome.candidates += len(cands)
        self.bar.set_postfix(candidates=self.outcome.candidates)
        if payload.get("skipped"):
            return self.finish(st, status="skipped", reason=payload["skipped"])
        solved = any(c.execution and c.execution.all_train_correct for c in st.candidates)
        if st.epoch >= self.learn.epochs or (solved and self.learn.stop_when_solved):
            return self.finish(st, status="done")
        examples = relabel(st.task, st.candidates, limit=self.learn.max_examples)
        if not examples:
            return self.finish(st, status="done", reason="nothing to learn from: no program ran cleanly")
        req = FinetuneRequest(base_model=self.learn.base_model, examples=examples, lora=self.learn.lora,
                              train=self.learn.train, start_adapter="" if self.learn.from_base else st.adapter)
        st.stage = "finetune"
        st.result = self.app.signature(FINETUNE, args=(req.model_dump(),)).apply_async()

    def on_finetune(self, st: _TaskState, payload: dict) -> None:
        st.adapter = payload["adapter"]
        st.epoch += 1
        st.stage = "search"
        self.outcome.adapters.setdefault(st.task.id, []).append(st.adapter)
        sampling = self.sampling.model_copy(update={"n": self.learn.samples_per_epoch})
        st.result = enqueue_search(self.app, st.task, sampling, st.adapter, st.epoch, self.augmentation(st))

    def finish(self, st: _TaskState, status: str, reason: str = "") -> None:
        task_id = st.task.id
        self.active.pop(task_id, None)
        self.attempts[task_id] = select_attempts(st.task, st.candidates)
        if status == "skipped":
            self.outcome.skipped[task_id] = reason
        elif status == "failed":
            self.outcome.failed[task_id] = reason
        per_epoch: dict[int, dict[str, int]] = {}
        for c in st.candidates:
            e = per_epoch.setdefault(c.epoch, {"candidates": 0, "valid": 0, "train_correct": 0})
            e["candidates"] += 1
            e["valid"] += int(c.execution is not None and all(r.error == "none" for r in c.execution.train))
            e["train_correct"] += int(bool(c.execution and c.execution.all_train_correct))
        record = {"task_id": task_id, "status": status, "reason": reason, "epochs": st.epoch,
                  "adapter": st.adapter, "per_epoch": per_epoch}
        self.task_file.write(json.dumps(record) + "\n")
        self.task_file.flush()
        st.candidates = []  # released: what is needed from here on is in attempts and on disk
        self.bar.update(1)

    def abandon(self, reason: str) -> None:
        for st in list(self.active.values()):
            if st.result is not None:
                st.result.revoke()
            self.finish(st, status="failed", reason=reason)

    def close(self) -> None:
        self.bar.close()
        self.cand_file.close()
        self.task_file.close()


def run_tasks(app: Celery, tasks: Sequence[Task], sampling: SamplingConfig, run_dir: Path,
              config: RunConfig, adapter: str = "", progress: bool = True,
              timeout: float | None = None, learn: LearnConfig | None = None) -> RunOutcome:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "run.json", config.model_dump())
    learn = learn or LearnConfig(base_model=config.model)
    run = _Run(app, tasks, sampling, run_dir, adapter, learn, progress)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        run.start()
        while run.active:
            if deadline is not None and time.monotonic() > deadline:
                run.abandon("timed out")
                break
            if not run.poll():
                time.sleep(0.1)  # polling the result backend; not a test synchronisation
    finally:
        run.close()
    outcome = run.outcome
    write_submission(outcome.submission, tasks, run.attempts)
    if all(t.has_solutions() for t in tasks):
        scores = score_run(tasks, run.attempts)
        outcome.score = scores["score"]
        write_json_atomic(run_dir / "score.json", scores)
    return outcome
