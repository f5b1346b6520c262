"""The producer's loop: send each task's next job, poll for finished jobs, hand each result to the
policy, record what it decided.

The producer holds little: a window of `max_active` tasks in flight, each with the candidates of
its own earlier jobs. Everything else is in the run directory (candidates and finished tasks,
appended as they arrive) or in Redis (the job each task waits on, counters). What happens next to
a task is decided in `policy`; how a restarted producer picks a run up is in `recovery`. A job
is recorded before it is sent and marked sent after, so a producer killed in between sends it
again under the same ids.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery
from celery.result import AsyncResult
from tqdm import tqdm

from arcsynth.common import payloads
from arcsynth.common.attempts import forget_jobs, job_attempts
from arcsynth.common.jobs import FinetuneRequest, FinetuneResult, read_result, send_finetune, send_search
from arcsynth.common.models import Candidate, JobRecord, RunConfig, Task, TaskStatus
from arcsynth.common.scoring import score_task
from arcsynth.producer import policy
from arcsynth.producer.policy import Event, Failed, Finetuned, Finish, Searched, Stopped, TaskState
from arcsynth.producer.recovery import recover
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState
from arcsynth.producer.telemetry import Telemetry, peak_rss_mb


@dataclass
class RunOutcome:
    run_dir: Path
    submission: Path
    score: float | None
    state: str = "done"
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    candidates: int = 0
    adapters: dict[str, list[str]] = field(default_factory=dict)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


class Producer:
    """The producer of one run; `run()` drives it to the end, `cancel()` ends it early."""

    def __init__(self, app: Celery, rundir: RunDir, state: RunState, progress: bool = False) -> None:
        self.app, self.rundir, self.state = app, rundir, state
        self.config: RunConfig = rundir.config()
        got = recover(rundir, state)
        self.finished, self.active, self.recorded = got.finished, got.active, got.recorded
        self.pending = (t for t in rundir.iter_tasks() if t.id not in self.finished and t.id not in self.active)
        self.outcome = RunOutcome(run_dir=rundir.path, submission=rundir.path / "submission.json", score=None)
        self.telemetry = Telemetry(state, len(self.config.task_ids))
        self.bar = tqdm(total=len(self.config.task_ids), initial=len(self.finished), unit="task",
                        disable=not progress, desc="tasks")

    def run(self) -> RunOutcome:
        """Drive every unfinished task to the end (or until cancelled or timed out)."""
        if self.state.state() in ("cancelling", "cancelled"):
            return self.cancel()
        self.state.claim()
        self.telemetry.progress(len(self.finished))
        timeout = self.config.timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for st in self.active.values():
                if not st.job.sent:
                    self._send(st)
            while True:
                self.telemetry.beat()
                if self.state.state() == "cancelling":
                    return self.cancel()
                if deadline is not None and time.monotonic() > deadline:
                    self._stop_all(Stopped(TaskStatus.FAILED, "timed out"))
                    break
                while len(self.active) < self.config.max_active and (task := next(self.pending, None)):
                    self._start(task)
                if not self.active:
                    break
                if not self._poll():
                    time.sleep(0.1)  # polling the result backend; not a test synchronisation
        finally:
            self.bar.close()
        return self._complete("done")

    def cancel(self) -> RunOutcome:
        """Revoke what has not started, record unfinished tasks as cancelled, write the results."""
        self.state.set(state="cancelling")
        self._stop_all(Stopped(TaskStatus.CANCELLED, "cancelled"))
        return self._complete("cancelled")

    # --- one task's jobs -----------------------------------------------------------------------------
    def _start(self, task: Task) -> None:
        st = self.active[task.id] = TaskState(task, policy.first_job(task.id, self.config))
        self._send(st)

    def _send(self, st: TaskState) -> None:
        """Record the job under fresh ids, send it, then mark it sent (see the module docstring)."""
        if not st.job.ids:
            st.job = st.job.model_copy(update={"ids": [uuid.uuid4().hex for _ in st.job.stages], "sent": False})
            self.state.put_job(st.task.id, st.job)
        messages = policy.requests(st, self.config)
        if isinstance(messages, FinetuneRequest):
            send_finetune(self.app, st.job.ids[0], messages)
        else:
            send_search(self.app, st.job.ids, *messages)
        st.job = st.job.model_copy(update={"sent": True})
        self.state.put_job(st.task.id, st.job)

    def _poll(self) -> bool:
        """Hand every finished job's result to the policy; False when none had finished."""
        progressed = False
        for st in list(self.active.values()):
            if not AsyncResult(st.job.ids[-1], app=self.app).ready():
                continue
            progressed = True
            done_ids = st.job.ids
            event, payload_ref = self._event(st)
            self._note_attempts(done_ids)
            self._apply(st, policy.decide(st, event, self.config))
            for job_id in done_ids:  # the task's next job (or its record) is stored: drop the results
                AsyncResult(job_id, app=self.app).forget()
            if payload_ref:
                payloads.drop(payload_ref)
        return progressed

    def _event(self, st: TaskState) -> tuple[Event, str]:
        """What the task's finished job came to (its candidates recorded), and its payload's address."""
        stages, ids = st.job.stages, st.job.ids
        last = AsyncResult(ids[-1], app=self.app)
        if not last.successful():
            failed_at = stages[0]
            if len(stages) == 2 and AsyncResult(ids[0], app=self.app).successful():
                self.state.count("sample", "done")
                failed_at = stages[1]
            self.state.count(failed_at, "failed")
            return Failed(failed_at, f"{type(last.result).__name__}: {last.result}"), ""
        result = read_result(self.app, ids[-1], stages[-1])
        for stage in stages:
            self.state.count(stage, "done")
        if isinstance(result, FinetuneResult):
            self.outcome.adapters.setdefault(st.task.id, []).append(result.adapter)
            return Finetuned(result.adapter), ""
        ref = result.candidates_ref
        self._record(st, payloads.load_candidates(ref) if ref else [])
        return Searched(result.skipped), ref

    def _record(self, st: TaskState, candidates: list[Candidate]) -> None:
        key = (st.task.id, st.epoch, st.job.parent)
        if key not in self.recorded:  # a job re-read after a restart is recorded once
            self.rundir.append_candidates(candidates)
            self.recorded.add(key)
            self.state.add_candidates(len(candidates))
            st.candidates.extend(candidates)
        self.outcome.candidates += len(candidates)
        self.bar.set_postfix(candidates=self.outcome.candidates)

    def _apply(self, st: TaskState, decision: JobRecord | Finish) -> None:
        if isinstance(decision, Finish):
            return self._finish(st, decision)
        if decision.step == "refine":
            st.refined.add((decision.epoch, decision.parent))
        st.job = decision
        self._send(st)

    def _finish(self, st: TaskState, end: Finish) -> None:
        record = policy.task_record(st, end)
        self.rundir.append_record(record)
        self.finished[st.task.id] = end.status
        self.state.finish_task(st.task.id, end.status.value,
                               score_task(st.task, record.attempts) if st.task.has_solutions() else None)
        del self.active[st.task.id]  # its candidates are released: what remains is on disk
        self.bar.update(1)
        self.telemetry.progress(len(self.finished))

    def _note_attempts(self, job_ids: list[str]) -> None:
        """Count jobs that a lost worker left behind (they ran again elsewhere), then drop their records."""
        attempts = job_attempts(self.state.r, job_ids)
        lost = [w for n, workers in attempts.values() if n > 1 for w in workers[:-1]]
        if lost:
            self.state.note_redelivered(sum(1 for n, _ in attempts.values() if n > 1), lost)
        forget_jobs(self.state.r, job_ids)

    # --- the end ---------------------------------------------------------------------------------------
    def _stop_all(self, event: Stopped) -> None:
        ids = [i for st in self.active.values() for i in st.job.ids]
        if ids:
            self.app.control.revoke(ids)
        for st in list(self.active.values()):
            self._apply(st, policy.decide(st, event, self.config))
        for task in self.pending:
            st = self.active[task.id] = TaskState(task, JobRecord(step="search", ids=[]))
            self._apply(st, policy.decide(st, event, self.config))

    def _complete(self, final: str) -> RunOutcome:
        _, scores = self.rundir.write_results()
        out = self.outcome
        out.state, out.score = final, (scores.score if scores else None)
        for tid, rec in self.rundir.records().items():
            if rec.status == TaskStatus.SKIPPED:
                out.skipped[tid] = rec.reason
            elif rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                out.failed[tid] = rec.reason
        self.state.set(state=final, score="" if out.score is None else out.score, finished=time.time(),
                       rss_peak_mb=peak_rss_mb())
        return out


def start_run(run_dir: Path, config: RunConfig, tasks: Sequence[Task], state: RunState) -> RunDir:
    """Write the run directory, then register the run in Redis (so a registered run always has its files)."""
    rundir = RunDir.create(run_dir, config, tasks)
    state.register(str(rundir.path.resolve()), len(tasks), config.dataset,
                   bool(tasks) and all(t.has_solutions() for t in tasks))
    return rundir
