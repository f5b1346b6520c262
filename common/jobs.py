"""The job contract between the producer and the workers: queues, task names, messages, keys.

Three job kinds travel through Redis as Celery tasks, each taking and returning the JSON of the
models below; nothing else crosses the queue:

| job | queue | request | result |
| --- | --- | --- | --- |
| `arcsynth.sample` | `inference.<model>` (`inference_queue`) | `SampleRequest` | `SampleResult` |
| `arcsynth.execute` (chained after sample) | `execute` | `SampleResult`, `ExecuteRequest` | `ExecuteResult` |
| `arcsynth.finetune` | `finetune` | `FinetuneRequest` | `FinetuneResult` |

A search or a refinement is one chain (sample, then execute) under two job ids; a fine-tune is
one job. The producer sends them with `send_search` and `send_finetune` and reads their results
with `read_result`; a worker validates each argument with `parse_message` (a message that does not
validate, say from another producer or an older version, fails its job with one short line naming
the argument and the field: `BadJobMessage`) and returns `model_dump()`.
Every Redis key arcsynth writes starts with `KEY_PREFIX`. Each inference worker serves one model
and consumes that model's queue only, so a run may sample from several models at once and a
worker never samples a job meant for another model; `run_queues` names every queue a run needs a
consumer on.
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar

from celery import Celery, chain
from celery.result import AsyncResult
from pydantic import BaseModel, Field, ValidationError, model_validator

from arcsynth.common.augment import Augmentation
from arcsynth.common.models import (
    MAX_SAMPLES,
    Completion,
    ExecutionResult,
    FinetuneRequest,
    FinetuneResult,
    Finite,
    Frozen,
    PromptFormat,
    SamplingConfig,
    Task,
)
from arcsynth.common.task_json import field_path, short_numbers
from arcsynth.common.text import escape

KEY_PREFIX = "arcsynth:"

SAMPLE = "arcsynth.sample"
EXECUTE = "arcsynth.execute"
FINETUNE = "arcsynth.finetune"
QUEUES = ("inference", "finetune", "execute")
ROUTES = {EXECUTE: {"queue": "execute"}, FINETUNE: {"queue": "finetune"}}  # a sample goes to its model's queue



def inference_queue(model: str) -> str:
    """The queue of the inference workers that serve `model`, named as the run and the worker were
    given it (`smollm2`, `Qwen/Qwen2.5-Coder-7B-Instruct`, a local path): `inference.` then the name
    with every run of characters outside [A-Za-z0-9._-] replaced by `_`."""
    return "inference." + re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")


def run_queues(models: list[str], learns: bool) -> dict[str, str]:
    """Every queue a run needs a live consumer on, with what serves it: each model's inference
    queue, `execute`, and `finetune` when the run learns."""
    queues = {inference_queue(m): f"inference worker for model {m}" for m in models}
    queues["execute"] = "execute worker"
    if learns:
        queues["finetune"] = "finetune worker"
    return queues


# The Celery stages behind a producer's step, in the order of its job ids.
Stage = Literal["sample", "execute", "finetune"]
STAGES: tuple[Stage, ...] = ("sample", "execute", "finetune")


class RefineSource(Frozen):
    """The program a refinement corrects, and what it did on the task."""

    code: str
    execution: ExecutionResult
    parent: str  # its output fingerprint; every correction records it as its `parent`


class SampleRequest(Frozen):
    """Sample `sampling.n` programs for `task` (as the prompt shows it), through `adapter` if set."""

    task: Task
    sampling: SamplingConfig
    adapter: str = ""
    refine: RefineSource | None = None
    prompt_format: PromptFormat = "arcsynth"
    model: str = Field(min_length=1)  # the model that samples it: the job goes to `inference_queue(model)`

    @model_validator(mode="after")
    def _feedback_fits_the_task(self) -> SampleRequest:
        """A refinement's feedback has one result per train pair of the task (else pairs would go unseen)."""
        if self.refine is not None and len(self.refine.execution.train) != len(self.task.train):
            raise ValueError(f"refine.execution.train has {len(self.refine.execution.train)} results "
                             f"for the task's {len(self.task.train)} train pairs")
        return self


class SampleResult(Frozen):
    """What an inference job returns for one task."""

    task_id: str
    completions: list[Completion] = Field([], max_length=MAX_SAMPLES)  # one request's samples at most
    skipped: str | None = None  # reason when the task could not be sampled (e.g. prompt too long)
    seconds: Finite = Field(0.0, ge=0)
    adapter: str = ""
    parent: str = ""  # for a refinement: the fingerprint of the program it corrects


class ExecuteRequest(Frozen):
    """Grade a sample job's completions on `task` (the original task). `augmentation`: how the
    prompt showed the task, if at all (outputs are reverted before grading)."""

    task: Task
    epoch: int = Field(0, ge=0)
    augmentation: Augmentation | None = None
    prompt_format: PromptFormat = "arcsynth"  # how programs are extracted and called


class ExecuteResult(Frozen):
    """A graded job: its candidates sit in shared storage at `candidates_ref` (see `payloads`)."""

    task_id: str
    skipped: str | None = None
    sample_seconds: float = 0.0
    count: int = 0
    candidates_ref: str = ""


M = TypeVar("M", bound=BaseModel)


class BadJobMessage(ValueError):
    """A job's argument that does not validate as its model: the job fails with this one line."""


def parse_message(model: type[M], payload: object, what: str) -> M:
    """`payload` (one argument of a job's message) validated as `model`, or `BadJobMessage`: `what`
    (`sample request`), the first field that is wrong and how many others are, in one line of at
    most a few hundred characters whatever the payload holds (pydantic's own text lists every
    error, megabytes for a task of bad cells, and Celery's JSON result backend drops it)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        loc = field_path(tuple(first["loc"])[:8])
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        msg = escape(short_numbers(str(first["msg"]).removeprefix("Value error, "))[:300])
        raise BadJobMessage(f"malformed {what}: " + (f"field {loc}: " if loc else "") + msg + more) from None


__all__ = [
    "BadJobMessage", "EXECUTE", "FINETUNE", "KEY_PREFIX", "QUEUES", "ROUTES", "SAMPLE", "STAGES", "ExecuteRequest",
    "ExecuteResult", "inference_queue", "parse_message", "run_queues",
    "FinetuneRequest", "FinetuneResult", "RefineSource", "SampleRequest", "SampleResult", "Stage", "read_result",
    "send_execute", "send_finetune", "send_sample", "send_search",
]


def send_search(app: Celery, ids: list[str], sample: SampleRequest, execute: ExecuteRequest) -> None:
    """Send a search or refinement: sample under `ids[0]`, then execute under `ids[1]`."""
    chain(
        app.signature(SAMPLE, args=(sample.model_dump(mode="json"),), task_id=ids[0], queue=inference_queue(sample.model)),
        app.signature(EXECUTE, args=(execute.model_dump(mode="json"),), task_id=ids[1]),
    ).apply_async()


def send_sample(app: Celery, request: SampleRequest, job_id: str | None = None) -> AsyncResult:
    """A sample job on its own (its result is a `SampleResult`'s JSON): for tools and benchmarks."""
    return app.signature(SAMPLE, args=(request.model_dump(mode="json"),), task_id=job_id,
                         queue=inference_queue(request.model)).apply_async()


def send_execute(app: Celery, sampled: SampleResult, request: ExecuteRequest, job_id: str | None = None) -> AsyncResult:
    """An execute job on its own, for completions obtained elsewhere (re-scoring, tests)."""
    args = (sampled.model_dump(mode="json"), request.model_dump(mode="json"))
    return app.signature(EXECUTE, args=args, task_id=job_id).apply_async()


def send_finetune(app: Celery, job_id: str | None, request: FinetuneRequest) -> AsyncResult:
    return app.signature(FINETUNE, args=(request.model_dump(mode="json"),), task_id=job_id).apply_async()


def read_result(app: Celery, job_id: str, stage: Stage) -> ExecuteResult | FinetuneResult:
    """The typed result of a finished job (`stage`: execute or finetune); raises what the job raised."""
    payload = AsyncResult(job_id, app=app).get(disable_sync_subtasks=False)
    return FinetuneResult.model_validate(payload) if stage == "finetune" else ExecuteResult.model_validate(payload)
