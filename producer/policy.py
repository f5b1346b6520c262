"""What happens next to a task: the search-and-learn policy, as pure functions.

Given a task's state and what its last job came to, `decide` returns the task's next job (a
`JobRecord` without ids yet) or its end (`Finish`). `requests` turns a job into the messages the
workers take. Nothing here touches Redis, Celery or files, so every branch is tested without a
cluster (tests/unit/test_policy.py):

    first job ─ search(epoch 0, the run's adapter)
    search done ─┬ prompt too long (not a refinement) ........... Finish(skipped)
                 ├ unsolved and a refinement round is left ...... refine(best unsolved program)
                 ├ epochs used up, or solved and stop-when-solved  Finish(done)
                 ├ no program ran cleanly (nothing to relabel) .. Finish(done, "nothing to learn from")
                 └ otherwise ................................... finetune(relabelled programs)
    finetune done ─ search(epoch + 1, the new adapter)
    job failed ─ Finish(failed, "<stage>: <error>");  run stopped ─ Finish(cancelled or failed, reason)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from arcsynth.common.augment import Augmentation, random_augmentation
from arcsynth.common.jobs import ExecuteRequest, FinetuneRequest, RefineSource, SampleRequest
from arcsynth.common.models import (
    Candidate,
    EpochCounts,
    JobRecord,
    LearnConfig,
    RunConfig,
    Task,
    TaskRecord,
    TaskStatus,
    TrainingExample,
)
from arcsynth.common.relabel import relabel
from arcsynth.common.scoring import select_attempts


@dataclass
class TaskState:
    """A task in flight: the job it waits on, and every candidate of its earlier jobs."""

    task: Task
    job: JobRecord
    candidates: list[Candidate] = field(default_factory=list)
    refined: set[tuple[int, str]] = field(default_factory=set)  # (epoch, fingerprint) of programs refined

    @property
    def epoch(self) -> int:
        return self.job.epoch

    @property
    def adapter(self) -> str:
        """The adapter the task samples through now (the start adapter of a fine-tune)."""
        return self.job.adapter

    @property
    def solved(self) -> bool:
        return any(c.execution is not None and c.execution.all_train_correct for c in self.candidates)


# --- what a job came to ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Searched:
    """A search or refinement finished; its candidates are already in the state."""

    skipped: str | None = None


@dataclass(frozen=True)
class Finetuned:
    adapter: str


@dataclass(frozen=True)
class Failed:
    stage: str
    error: str


@dataclass(frozen=True)
class Stopped:
    """The run ended this task early: cancelled, or timed out."""

    status: TaskStatus
    reason: str


Event = Searched | Finetuned | Failed | Stopped


@dataclass(frozen=True)
class Finish:
    status: TaskStatus
    reason: str = ""


Decision = JobRecord | Finish


# --- decisions ------------------------------------------------------------------------------------
def first_job(task_id: str, config: RunConfig) -> JobRecord:
    return search_job(task_id, 0, config.adapter, config.learn)


def search_job(task_id: str, epoch: int, adapter: str, learn: LearnConfig) -> JobRecord:
    aug = random_augmentation(random.Random(f"{task_id}:{epoch}")) if learn.augment else None
    return JobRecord(step="search", epoch=epoch, adapter=adapter, ids=[],
                     augmentation=aug.model_dump() if aug else None)


def decide(state: TaskState, event: Event, config: RunConfig) -> Decision:
    """The task's next job, or its end (see the module docstring for the branches)."""
    learn = config.learn
    if isinstance(event, Stopped):
        return Finish(event.status, event.reason)
    if isinstance(event, Failed):
        return Finish(TaskStatus.FAILED, f"{event.stage}: {event.error}")
    if isinstance(event, Finetuned):
        return search_job(state.task.id, state.epoch + 1, event.adapter, learn)
    if event.skipped and state.job.step != "refine":  # a refinement too long to prompt: go on
        return Finish(TaskStatus.SKIPPED, event.skipped)
    if not state.solved:
        parent = refinement_parent(state, learn)
        if parent is not None:
            return JobRecord(step="refine", epoch=state.epoch, adapter=state.adapter, ids=[], parent=parent)
    if state.epoch >= learn.epochs or (state.solved and learn.stop_when_solved):
        return Finish(TaskStatus.DONE)
    if not training_examples(state, learn):
        return Finish(TaskStatus.DONE, "nothing to learn from: no program ran cleanly")
    return JobRecord(step="finetune", epoch=state.epoch, adapter=state.adapter, ids=[])


def refinement_parent(state: TaskState, learn: LearnConfig) -> str | None:
    """The fingerprint of the program to refine next in this epoch, or None when no round is left
    or no program is worth fixing: the best by train pixel accuracy among this epoch's programs
    that ran, produced some output, are not train-correct and were not refined yet."""
    if sum(1 for epoch, _ in state.refined if epoch == state.epoch) >= learn.refine_rounds:
        return None
    worth = [c for c in state.candidates if c.epoch == state.epoch and c.code and c.execution
             and (state.epoch, c.execution.fingerprint) not in state.refined and not c.execution.all_train_correct
             and any(r.output is not None for r in c.execution.train)]
    if not worth:
        return None
    best = max(worth, key=lambda c: (c.execution.train_pixel_accuracy, -c.index))  # type: ignore[union-attr]
    return best.execution.fingerprint  # type: ignore[union-attr]


def training_examples(state: TaskState, learn: LearnConfig) -> list[TrainingExample]:
    return relabel(state.task, state.candidates, limit=learn.max_examples)


def task_record(state: TaskState, end: Finish) -> TaskRecord:
    """The finished task's line in tasks.jsonl: its end, per-epoch counts and its two attempts."""
    per_epoch: dict[int, EpochCounts] = {}
    for c in state.candidates:
        e = per_epoch.setdefault(c.epoch, EpochCounts())
        e.candidates += 1
        e.valid += int(c.execution is not None and all(r.error == "none" for r in c.execution.train))
        e.train_correct += int(bool(c.execution and c.execution.all_train_correct))
    return TaskRecord(task_id=state.task.id, status=end.status, reason=end.reason, epochs=state.epoch,
                      adapter=state.adapter, per_epoch=per_epoch, attempts=select_attempts(state.task, state.candidates))


# --- messages -------------------------------------------------------------------------------------
def sampling_for(job: JobRecord, config: RunConfig):
    s, learn = config.sampling, config.learn
    if job.step == "refine":
        return s.model_copy(update={"n": learn.refine_samples})
    return s if job.epoch == 0 else s.model_copy(update={"n": learn.samples_per_epoch})


def requests(state: TaskState, config: RunConfig) -> tuple[SampleRequest, ExecuteRequest] | FinetuneRequest:
    """The messages for the task's current job: sample + execute for a search or refinement,
    one fine-tune request otherwise. Deterministic, so a job re-sent after a restart is the same."""
    job, task, learn = state.job, state.task, config.learn
    if job.step == "finetune":
        return FinetuneRequest(base_model=learn.base_model or config.model, examples=training_examples(state, learn),
                               lora=learn.lora, train=learn.train, start_adapter="" if learn.from_base else job.adapter)
    aug = Augmentation.model_validate(job.augmentation) if job.augmentation else None
    refine = None
    if job.step == "refine":
        parent = next(c for c in state.candidates if c.execution and c.execution.fingerprint == job.parent)
        refine = RefineSource(code=parent.code or "", execution=parent.execution, parent=job.parent)
    shown = task if aug is None else aug.apply_task(task)
    return (SampleRequest(task=shown, sampling=sampling_for(job, config), adapter=job.adapter, refine=refine),
            ExecuteRequest(task=task, epoch=job.epoch, augmentation=aug))
