"""What a task's finished job came to, read from the result backend and counted in the run state.

`collect` turns the Celery results of a finished search, refinement or fine-tune into the policy's
event (with the candidates or adapter it produced); `release` drops the job's results and payload
once the task's next job or its end is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import Celery
from celery.result import AsyncResult

from arcsynth.common import payloads
from arcsynth.common.attempts import forget_jobs, job_attempts
from arcsynth.common.jobs import FinetuneResult, read_result
from arcsynth.common.models import Candidate, JobRecord
from arcsynth.producer.policy import Event, Failed, Finetuned, Searched
from arcsynth.producer.runstate import RunState


@dataclass
class Outcome:
    event: Event
    candidates: list[Candidate] = field(default_factory=list)
    adapter: str = ""
    payload_ref: str = ""


def finished(app: Celery, job: JobRecord) -> bool:
    return AsyncResult(job.ids[-1], app=app).ready()


def collect(app: Celery, state: RunState, job: JobRecord) -> Outcome:
    """The finished job's event; its stages are counted (done or failed) for the next transition."""
    stages, ids = job.stages, job.ids
    last = AsyncResult(ids[-1], app=app)
    if not last.successful():
        failed_at = stages[0]
        if len(stages) == 2 and AsyncResult(ids[0], app=app).successful():
            state.count("sample", "done")
            failed_at = stages[1]
        state.count(failed_at, "failed")
        return Outcome(Failed(failed_at, f"{type(last.result).__name__}: {last.result}"))
    result = read_result(app, ids[-1], stages[-1])
    for stage in stages:
        state.count(stage, "done")
    if isinstance(result, FinetuneResult):
        return Outcome(Finetuned(result.adapter), adapter=result.adapter)
    ref = result.candidates_ref
    return Outcome(Searched(result.skipped), payloads.load_candidates(ref) if ref else [], payload_ref=ref)


def release(app: Celery, state: RunState, job: JobRecord, outcome: Outcome) -> None:
    """Count jobs a lost worker left behind (they ran again elsewhere), then drop the job's records,
    results and payload: the task's next job (or its end) is stored by now."""
    attempts = job_attempts(state.r, job.ids)
    lost = [w for n, workers in attempts.values() if n > 1 for w in workers[:-1]]
    if lost:
        state.note_redelivered(sum(1 for n, _ in attempts.values() if n > 1), lost)
    forget_jobs(state.r, job.ids)
    for job_id in job.ids:
        AsyncResult(job_id, app=app).forget()
    if outcome.payload_ref:
        payloads.drop(outcome.payload_ref)
