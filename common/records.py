"""The run's records: how each task ended (a line of tasks.jsonl) and the job each live task waits on
(kept in Redis, so a restarted producer can re-attach to it)."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel

from arcsynth.common.models import Attempt, Frozen


class TaskStatus(str, Enum):
    """How a task ended. Every status is final: a finished task is never picked up again."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class EpochCounts(BaseModel):
    candidates: int = 0
    valid: int = 0
    train_correct: int = 0


class TaskRecord(Frozen):
    """One finished task, a line of the run's tasks.jsonl: enough to write the submission again."""

    task_id: str
    status: TaskStatus
    reason: str = ""
    epochs: int = 0
    adapter: str = ""
    per_epoch: dict[int, EpochCounts] = {}
    attempts: list[Attempt] = []


# search, refine, finetune: the task's own jobs; learn: waiting for the run's adapter (scope "run").
Step = Literal["search", "refine", "finetune", "learn"]


class JobRecord(Frozen):
    """The job a task is waiting on, kept in Redis so a restarted producer can re-attach to it.

    `step` is the producer's step (search, refine or fine-tune). It runs once per model in
    `models` (its lanes, in order; empty: the run's one model), each model through its own adapter
    (`adapter_for`). `stages` are the Celery jobs behind it, one id each in `ids`, lane after
    lane: sample then execute for a search or a refinement, one fine-tune otherwise."""

    step: Step
    epoch: int = 0
    adapter: str = ""  # the first model's adapter (the only one of a one-model run)
    adapters: dict[str, str] = {}  # model -> adapter, where a model's differs from `adapter`
    models: list[str] = []
    ids: list[str]
    sent: bool = False  # False: recorded but maybe never enqueued (the producer died in between)
    augmentation: dict | None = None
    parent: str = ""  # refine: the fingerprint of the program being corrected

    def adapter_for(self, model: str) -> str:
        return self.adapters.get(model, self.adapter)

    @property
    def lane_stages(self) -> tuple[Literal["sample", "execute", "finetune"], ...]:
        """The Celery jobs of one lane."""
        if self.step == "learn":
            return ()
        return ("finetune",) if self.step == "finetune" else ("sample", "execute")

    @property
    def stages(self) -> tuple[Literal["sample", "execute", "finetune"], ...]:
        return self.lane_stages * max(1, len(self.models))

    def lanes(self) -> list[tuple[str, list[str]]]:
        """(model, that lane's ids) for each lane; the model is "" in a job without `models`."""
        width = len(self.lane_stages)
        models = self.models or [""]
        return [(m, self.ids[i * width:(i + 1) * width]) for i, m in enumerate(models)] if width else []
