"""What happens next to a task: the search-and-learn policy, as pure functions.

Given a task's state and what its last job came to, `decide` returns the task's next job (a
`JobRecord` without ids yet) or its end (`Finish`). `requests` turns a job into the messages the
workers take. Nothing here touches Redis, Celery or files, so every branch is tested without a
cluster (tests/unit/test_policy.py):

    first job ─ search(epoch 0, the run's adapter)
    search done ─┬ prompt too long (not a refinement) ............. Finish(skipped)
                 ├ fewer than stop_after train-perfect programs
                 │   and a refinement round is left ............... refine(best, or drawn by REx)
                 ├ epochs used up, or stop_after reached .......... Finish(done)
                 ├ scope "run" ................................... learn(wait for the run's adapter)
                 ├ nothing to learn from (no program ran cleanly) . Finish(done, "nothing to learn from")
                 └ otherwise ..................................... finetune(selected programs)
    finetune done (its own, or the run's) ─ search(epoch + 1, the new adapter)
    job failed ─ Finish(failed, "<stage>: <error>");  run stopped ─ Finish(cancelled or failed, reason)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from arcsynth.common.augment import Augmentation, random_augmentation
from arcsynth.common.extract import normalise
from arcsynth.common.jobs import ExecuteRequest, FinetuneRequest, RefineSource, SampleRequest
from arcsynth.common.models import Candidate, LearnConfig, PromptFormat, RunConfig, Task, TrainingExample
from arcsynth.common.records import EpochCounts, JobRecord, TaskRecord, TaskStatus
from arcsynth.common.relabel import refinement_examples, relabel
from arcsynth.common.scoring import Vote, select_attempts


@dataclass
class TaskState:
    """A task in flight: the job it waits on, and every candidate of its earlier jobs."""

    task: Task
    job: JobRecord
    candidates: list[Candidate] = field(default_factory=list)
    refined: list[tuple[int, str]] = field(default_factory=list)  # (epoch, fingerprint) of each refinement sent

    @property
    def epoch(self) -> int:
        return self.job.epoch

    @property
    def adapter(self) -> str:
        """The adapter the task samples through now (the start adapter of a fine-tune)."""
        return self.job.adapter

    @property
    def perfect_programs(self) -> int:
        """Distinct (by source, whitespace aside) programs correct on every train pair."""
        return len({normalise(c.code) for c in self.candidates
                    if c.code and c.execution is not None and c.execution.all_train_correct})


# --- what a job came to ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Searched:
    """A search or refinement finished; its candidates are already in the state."""

    skipped: str | None = None


@dataclass(frozen=True)
class Finetuned:
    """A fine-tune finished: `adapter` for the run's one model, or `adapters` (model -> adapter) for
    each model that trained in a run with several."""

    adapter: str
    adapters: dict[str, str] = field(default_factory=dict)


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

log = logging.getLogger(__name__)


# --- decisions ------------------------------------------------------------------------------------
def first_job(task_id: str, config: RunConfig) -> JobRecord:
    """Epoch 0's search: every model samples, the first through the run's start adapter, the
    others through their base model."""
    others = {m: "" for m in config.all_models[1:]} if config.adapter else {}
    return search_job(task_id, 0, config.adapter, config.learn, config.all_models, others)


def search_job(task_id: str, epoch: int, adapter: str, learn: LearnConfig, models: list[str],
               adapters: dict[str, str] | None = None) -> JobRecord:
    aug = random_augmentation(random.Random(f"{task_id}:{epoch}")) if learn.augment else None
    return JobRecord(step="search", epoch=epoch, adapter=adapter, adapters=adapters or {}, models=models, ids=[],
                     augmentation=aug.model_dump() if aug else None)


def after_finetune(job: JobRecord, event: Finetuned, models: list[str]) -> tuple[str, dict[str, str]]:
    """(first model's adapter, the others' where they differ) once `event`'s adapters replace the
    ones `job` sampled through; a model that did not train keeps its adapter."""
    new = {m: job.adapter_for(m) for m in models} | (event.adapters or {models[0]: event.adapter})
    first = new[models[0]]
    return first, {m: a for m, a in new.items() if a != first}


def decide(state: TaskState, event: Event, config: RunConfig) -> Decision:
    """The task's next job, or its end (see the module docstring for the branches)."""
    learn = config.learn
    if isinstance(event, Stopped):
        return Finish(event.status, event.reason)
    if isinstance(event, Failed):
        return Finish(TaskStatus.FAILED, f"{event.stage}: {event.error}")
    if isinstance(event, Finetuned):
        adapter, adapters = after_finetune(state.job, event, config.all_models)
        return search_job(state.task.id, state.epoch + 1, adapter, learn, config.all_models, adapters)
    if event.skipped and state.job.step != "refine":  # a refinement too long to prompt: go on
        return Finish(TaskStatus.SKIPPED, event.skipped)
    enough = learn.stop_after is not None and state.perfect_programs >= learn.stop_after
    if not enough:
        parent = refinement_parent(state, learn)
        if parent is not None:
            return state.job.model_copy(update={"step": "refine", "ids": [], "sent": False, "parent": parent,
                                                "models": config.all_models, "augmentation": None})
    if state.epoch >= learn.epochs or enough:
        return Finish(TaskStatus.DONE)
    if learn.scope == "run":
        return state.job.model_copy(update={"step": "learn", "ids": [], "sent": False, "parent": "", "models": [],
                                            "augmentation": None})
    learners = [m for m in config.all_models if training_examples(state, learn, config.prompt_format, m)]
    if not learners:
        return Finish(TaskStatus.DONE, NOTHING_TO_LEARN)
    return state.job.model_copy(update={"step": "finetune", "ids": [], "sent": False, "parent": "",
                                        "models": learners, "augmentation": None})


NOTHING_TO_LEARN = "nothing to learn from: no program ran cleanly"


def decide_or_fail(state: TaskState, event: Event, config: RunConfig) -> Decision:
    """`decide`, except that a decision that raises (one task's odd data, a bug) ends that task alone as
    failed, with the error as its reason: never the run, and never again when the run resumes."""
    try:
        return decide(state, event, config)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.exception("deciding the next step of task %s failed", state.task.id)
        return Finish(TaskStatus.FAILED, f"the policy failed: {type(exc).__name__}: {exc}"[:300])


def refinement_parent(state: TaskState, learn: LearnConfig) -> str | None:
    """The fingerprint of the program to refine next in this epoch, or None when no round is left
    or no program is worth fixing (one that ran, produced some output and is not train-perfect).
    `best`: the best by train pixel accuracy among this epoch's programs not refined yet. `rex`:
    drawn by Thompson sampling among all the task's programs (see `rex_pick`), seeded by the
    task, the epoch and the round, so a restarted producer draws the same."""
    rounds = sum(1 for epoch, _ in state.refined if epoch == state.epoch)
    if rounds >= learn.refine_rounds:
        return None
    worth: dict[str, Candidate] = {}
    for c in state.candidates:
        ex = c.execution
        if (c.code and ex and not ex.all_train_correct and any(r.output is not None for r in ex.train)
                and (learn.refine_strategy == "rex" or c.epoch == state.epoch) and ex.fingerprint not in worth):
            worth[ex.fingerprint] = c
    if learn.refine_strategy == "rex":
        times = {fp: sum(1 for _, f in state.refined if f == fp) for fp in worth}
        options = [(fp, c.execution.train_pixel_accuracy, times[fp]) for fp, c in worth.items()]  # type: ignore[union-attr]
        rng = random.Random(f"{state.task.id}:{state.epoch}:{rounds}")
        return rex_pick(options, learn.rex_c, rng) if options else None
    fresh = [c for fp, c in worth.items() if (state.epoch, fp) not in state.refined]
    if not fresh:
        return None
    best = max(fresh, key=lambda c: (c.execution.train_pixel_accuracy, -c.index))  # type: ignore[union-attr]
    return best.execution.fingerprint  # type: ignore[union-attr]


def rex_pick(options: Sequence[tuple[str, float, int]], c: float, rng: random.Random) -> str:
    """REx: for each (program, h = train accuracy, N = times refined) draw θ ~ Beta(1 + c·h,
    1 + c·(1 − h) + N) and return the program with the largest θ."""
    draws = [(rng.betavariate(1 + c * h, 1 + c * (1 - h) + n), fp) for fp, h, n in options]
    return max(draws)[1]


def training_examples(state: TaskState, learn: LearnConfig, fmt: PromptFormat = "arcsynth",
                      model: str | None = None) -> list[TrainingExample]:
    """The task's selected, relabelled programs, then (with learn_from_refinements) the corrections
    that beat their parent, in the refinement format; all in the run's prompt format `fmt`. With
    `model`, only that model's programs (and unattributed ones): each model learns from its own."""
    candidates = state.candidates if model is None else [c for c in state.candidates if c.model in (model, "")]
    examples = relabel(state.task, candidates, learn.select, learn.select_k, fmt)
    if learn.learn_from_refinements:
        examples += refinement_examples(state.task, candidates, fmt)
    return examples


def run_finetune_request(examples: dict[str, list[TrainingExample]], config: RunConfig,
                         adapter: str, model: str = "") -> FinetuneRequest | None:
    """Scope "run": one request for every task's examples of this epoch, in the run's task order;
    None when no task has any. `adapter`: the adapter the tasks sampled through; `model`: in a run
    with several models, the model it trains (each model's own examples)."""
    learn = config.learn
    order = [tid for tid in config.task_ids if examples.get(tid)]
    if not order:
        return None
    return FinetuneRequest(base_model=model or learn.base_model or config.model, examples=[e for t in order for e in examples[t]],
                           lora=learn.lora, train=learn.train, start_adapter="" if learn.from_base else adapter,
                           sources={t: len(examples[t]) for t in order}, prompt_format=config.prompt_format)


def task_record(state: TaskState, end: Finish, vote: Vote = "train-correct") -> TaskRecord:
    """The finished task's line in tasks.jsonl: its end, per-epoch counts and its two attempts."""
    per_epoch: dict[int, EpochCounts] = {}
    for c in state.candidates:
        e = per_epoch.setdefault(c.epoch, EpochCounts())
        e.candidates += 1
        e.valid += int(c.execution is not None and all(r.error == "none" for r in c.execution.train))
        e.train_correct += int(bool(c.execution and c.execution.all_train_correct))
    return TaskRecord(task_id=state.task.id, status=end.status, reason=end.reason, epochs=state.epoch,
                      adapter=state.adapter, per_epoch=per_epoch,
                      attempts=select_attempts(state.task, state.candidates, vote))


# --- messages -------------------------------------------------------------------------------------
def sampling_for(job: JobRecord, config: RunConfig, model: str = ""):
    s, learn = config.sampling, config.learn
    if job.step == "refine":
        return s.model_copy(update={"n": learn.refine_samples})
    if job.epoch == 0:
        return s if model not in config.samples_by_model else s.model_copy(update={"n": config.samples_by_model[model]})
    return s.model_copy(update={"n": learn.samples_per_epoch})


Messages = tuple[SampleRequest, ExecuteRequest] | FinetuneRequest


def requests(state: TaskState, config: RunConfig) -> list[Messages]:
    """The messages of the task's current job (not `learn`), one entry per lane (`JobRecord.lanes`):
    sample + execute for a search or refinement, a fine-tune request otherwise. Deterministic, so a
    job re-sent after a restart is the same."""
    models = [m or config.model for m, _ in state.job.lanes()]
    return [lane_request(state, config, m) for m in models]


def lane_request(state: TaskState, config: RunConfig, model: str) -> Messages:
    """The messages of the current job's lane for `model`."""
    job, task, learn = state.job, state.task, config.learn
    adapter = job.adapter_for(model)
    if job.step == "finetune":
        several = len(config.all_models) > 1
        examples = training_examples(state, learn, config.prompt_format, model if several else None)
        base = model if several else (learn.base_model or config.model)
        return FinetuneRequest(base_model=base, examples=examples, lora=learn.lora,
                               train=learn.train, start_adapter="" if learn.from_base else adapter,
                               sources={task.id: len(examples)}, prompt_format=config.prompt_format)
    aug = Augmentation.model_validate(job.augmentation) if job.augmentation else None
    refine = None
    if job.step == "refine":
        parent = next(c for c in state.candidates if c.execution and c.execution.fingerprint == job.parent)
        refine = RefineSource(code=parent.code or "", execution=parent.execution, parent=job.parent)
    shown = task if aug is None else aug.apply_task(task)
    fmt = config.prompt_format
    return (SampleRequest(task=shown, sampling=sampling_for(job, config, model), adapter=adapter, refine=refine,
                          prompt_format=fmt, model=model),
            ExecuteRequest(task=task, epoch=job.epoch, augmentation=aug, prompt_format=fmt))
