"""What a task's finished job came to, read from the result backend and counted in the run state.

`collect` turns the Celery results of a finished search, refinement or fine-tune, lane by lane
(one per model), into the policy's event (with the candidates or adapters it produced); `release`
drops the job's results and payloads once the task's next job or its end is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import Celery
from celery.result import AsyncResult

from arcsynth.common import payloads
from arcsynth.common.attempts import forget_jobs, job_attempts
from arcsynth.common.jobs import FinetuneResult, read_result
from arcsynth.common.models import Candidate
from arcsynth.common.records import JobRecord
from arcsynth.producer.policy import Event, Failed, Finetuned, Searched
from arcsynth.producer.runstate import RunState


@dataclass
class Outcome:
    event: Event
    graded: list[tuple[str, list[Candidate]]] = field(default_factory=list)  # (execute job id, its candidates)
    adapters: list[str] = field(default_factory=list)
    payload_refs: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[Candidate]:
        return [c for _, cands in self.graded for c in cands]


def finished(app: Celery, job: JobRecord) -> bool:
    """Every lane's last job has ended (a failed sample fails the execute chained after it)."""
    return all(AsyncResult(ids[-1], app=app).ready() for _, ids in job.lanes())


def collect(app: Celery, state: RunState, job: JobRecord) -> Outcome:
    """The finished job's event; its stages are counted (done or failed) for the next transition.
    A lane that failed fails the job; a search is skipped only when every lane was."""
    stages = job.lane_stages
    lanes = job.lanes()
    for _, ids in lanes:
        last = AsyncResult(ids[-1], app=app)
        if not last.successful():
            failed_at = stages[0]
            if len(stages) == 2 and AsyncResult(ids[0], app=app).successful():
                state.count("sample", "done")
                failed_at = stages[1]
            state.count(failed_at, "failed")
            return Outcome(Failed(failed_at, f"{type(last.result).__name__}: {last.result}"))
    out = Outcome(Searched())
    trained: dict[str, str] = {}
    skipped: list[str | None] = []
    for model, ids in lanes:
        result = read_result(app, ids[-1], stages[-1])
        for stage in stages:
            state.count(stage, "done")
        if isinstance(result, FinetuneResult):
            trained[model] = result.adapter
            out.adapters.append(result.adapter)
            continue
        skipped.append(result.skipped)
        out.graded.append((ids[-1], _candidates(result.candidates_ref, model)))
        if result.candidates_ref:
            out.payload_refs.append(result.candidates_ref)
    if trained:
        first = next(iter(trained.values()))
        out.event = Finetuned(first, {m: a for m, a in trained.items() if m})
    else:
        out.event = Searched(skipped[0] if skipped and all(skipped) else None)
    return out


def _candidates(ref: str, model: str) -> list[Candidate]:
    cands = payloads.load_candidates(ref) if ref else []
    return [c.model_copy(update={"model": model}) for c in cands] if model else cands


def graded_lanes(app: Celery, job: JobRecord, skip: frozenset[str] | set[str] = frozenset()) -> list[tuple[str, str, str]]:
    """(execute job id, model, payload ref) of each lane of a search or refinement that has already
    ended well, while others may still run: a run with several models records each model's
    programs as they come (`lane_candidates`), and keeps them when the run stops before the
    slowest model answers. Lanes whose execute id is in `skip` are left out; payloads stay until
    `release`."""
    if job.step not in ("search", "refine"):
        return []
    out = []
    for model, ids in job.lanes():
        if len(ids) == 2 and ids[-1] not in skip and AsyncResult(ids[-1], app=app).successful():
            out.append((ids[-1], model, getattr(read_result(app, ids[-1], "execute"), "candidates_ref", "")))
    return out


def lane_candidates(ref: str, model: str) -> list[Candidate]:
    """A lane's candidates from its payload, each naming the lane's model."""
    return _candidates(ref, model)


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
    for ref in outcome.payload_refs:
        payloads.drop(ref)
