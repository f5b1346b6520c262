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

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery
from tqdm import tqdm

from arcsynth.common.attempts import cancel_jobs
from arcsynth.common.jobs import FinetuneRequest, send_finetune, send_search
from arcsynth.common.models import Candidate, RunConfig, Task
from arcsynth.common.records import JobRecord, TaskRecord, TaskStatus
from arcsynth.common.scoring import score_task
from arcsynth.producer import lost_jobs, outcomes, policy
from arcsynth.producer.liveness import stderr_line
from arcsynth.producer.policy import Event, Finetuned, Finish, Searched, Stopped, TaskState
from arcsynth.producer.recovery import recover
from arcsynth.producer.run_learning import RunLearning
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState
from arcsynth.producer.telemetry import Telemetry, peak_rss_mb

log = logging.getLogger(__name__)

DEFAULT_LOST_JOB_CHECK_S = 30.0  # an app without the setting (`make_app` sets it)


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

    def note_ends(self, records: dict[str, TaskRecord]) -> None:
        """Why each task that did not end `done` ended as it did."""
        for tid, rec in records.items():
            if rec.status == TaskStatus.SKIPPED:
                self.skipped[tid] = rec.reason
            elif rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                self.failed[tid] = rec.reason


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


class Producer:
    """The producer of one run; `run()` drives it to the end, `cancel()` ends it early."""

    def __init__(self, app: Celery, rundir: RunDir, state: RunState, progress: bool = False) -> None:
        self.app, self.rundir, self.state = app, rundir, state
        self.config: RunConfig = rundir.config()
        got = recover(rundir, state)
        self.finished, self.active, self.recorded = got.finished, got.active, got.recorded
        self.learning = RunLearning(app, rundir, state, self.config, got.waiting)
        held = {st.task.id for st in self.learning.held}
        self.pending = (t for t in rundir.iter_tasks()
                        if t.id not in self.finished and t.id not in self.active and t.id not in held)
        self.outcome = RunOutcome(run_dir=rundir.path, submission=rundir.path / "submission.json", score=None)
        self.telemetry = Telemetry(state, len(self.config.task_ids))
        self.lost_watch = lost_jobs.LostJobWatch(float(app.conf.get("arcsynth_lost_job_check_s") or DEFAULT_LOST_JOB_CHECK_S))
        self.bar = tqdm(total=len(self.config.task_ids), initial=len(self.finished), unit="task",
                        disable=not progress, desc="tasks")

    def run(self) -> RunOutcome:
        """Drive every unfinished task to the end (or until cancelled or timed out)."""
        if self.state.claim() in ("cancelling", "cancelled"):
            return self.cancel()
        self.telemetry.progress(len(self.finished))
        timeout = self.config.timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        stopping = self.state.get("stopping") == "timed out"  # a producer died while stopping the run: finish the stop
        if stopping:
            deadline = time.monotonic()
        try:
            for st in self.active.values():
                if not st.job.sent and not stopping:
                    self._send(st)
            while True:
                self.telemetry.beat()
                if self.state.state() == "cancelling":
                    return self.cancel()
                if deadline is not None and time.monotonic() >= deadline:
                    self.state.set(stopping="timed out")  # before its jobs are given up: a resumed producer stops too
                    self._stop_all(Stopped(TaskStatus.FAILED, "timed out"))
                    break
                for st, event in self.learning.take_ready(self.config.max_active - len(self.active)):
                    self._resume(st, event)
                while len(self.active) < self.config.max_active and (task := next(self.pending, None)):
                    self._start(task)
                for st, event in self.learning.poll(nothing_in_flight=not self.active):
                    self._resume(st, event)
                if not self.active and not self.learning.held and self.learning.job is None:
                    break
                self._resend_lost_jobs()
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

    # --- job messages the broker lost (see `lost_jobs`) ----------------------------------------------------
    def _resend_lost_jobs(self) -> None:
        """Every `arcsynth_lost_job_check_s` (`ARCSYNTH_LOST_JOB_CHECK_S`): send again, under the same
        ids, the messages of jobs in flight that the broker lost; one line on stderr for each."""
        now = time.monotonic()
        if not self.lost_watch.due(now):
            return
        jobs = {tid: st.job for tid, st in self.active.items()}
        if self.learning.job is not None:
            jobs[lost_jobs.RUN_JOB] = self.learning.job
        for lost in lost_jobs.check(self.app, self.state.r, self.lost_watch, jobs, self.config.model, now):
            if lost.owner == lost_jobs.RUN_JOB and self.learning.job is not None:
                self.learning.job = self.learning.job.model_copy(update={"sent": False})  # its next poll sends it
            else:
                st = self.active[lost.owner]
                lost_jobs.resend(self.app, lost, st.job, policy.requests(st, self.config)[lost.lane])
            lost_jobs.note_resent(self.state)
            stderr_line(lost_jobs.describe(lost))

    # --- one task's jobs -----------------------------------------------------------------------------
    def _start(self, task: Task) -> None:
        st = self.active[task.id] = TaskState(task, policy.first_job(task.id, self.config))
        self._send(st)

    def _resume(self, st: TaskState, event: Event) -> None:
        """A task back from waiting for the run's adapter (scope "run")."""
        self.active[st.task.id] = st
        if isinstance(event, Finetuned):
            self.outcome.adapters.setdefault(st.task.id, []).append(event.adapter)
        self._apply(st, policy.decide_or_fail(st, event, self.config))

    def _send(self, st: TaskState) -> None:
        """Record the job under fresh ids, send it, then mark it sent (see the module docstring)."""
        if not st.job.ids:
            st.job = st.job.model_copy(update={"ids": [uuid.uuid4().hex for _ in st.job.stages], "sent": False})
            self.state.put_job(st.task.id, st.job)
        for (_, ids), messages in zip(st.job.lanes(), policy.requests(st, self.config)):
            if isinstance(messages, FinetuneRequest):
                send_finetune(self.app, ids[0], messages)
            else:
                send_search(self.app, ids, *messages)
        st.job = st.job.model_copy(update={"sent": True})
        self.state.put_job(st.task.id, st.job)

    def _poll(self) -> bool:
        """Hand every finished job's result to the policy; False when none had finished."""
        progressed = False
        for st in list(self.active.values()):
            if not outcomes.finished(self.app, st.job):
                if len(st.job.models) > 1:
                    self._record_graded_lanes(st)
                continue
            progressed, job = True, st.job
            out = outcomes.collect(self.app, self.state, job)
            self.outcome.adapters.setdefault(st.task.id, []).extend(out.adapters)
            if isinstance(out.event, Searched):
                for execute_id, candidates in out.graded:
                    self._record(st, execute_id, candidates)
            self._apply(st, policy.decide_or_fail(st, out.event, self.config))
            outcomes.release(self.app, self.state, job, out)
        return progressed

    def _record_graded_lanes(self, st: TaskState, every: bool = False) -> list[str]:
        """Record the lanes of the task's job that have ended (see `outcomes.graded_lanes`), once
        each; the payloads of those lanes (`every`: of recorded ones too, for their release)."""
        refs = []
        for execute_id, model, ref in outcomes.graded_lanes(self.app, st.job, set() if every else self.recorded):
            if execute_id not in self.recorded:
                self._record(st, execute_id, outcomes.lane_candidates(ref, model))
            refs.append(ref)
        return refs

    def _record(self, st: TaskState, key: str, candidates: list[Candidate]) -> None:
        """Append one execute job's candidates, once (`key`: the job's id)."""
        if key not in self.recorded:  # a job re-read after a restart is recorded once
            self.rundir.append_candidates(candidates)
            self.recorded.add(key)
            several = len(self.config.all_models) > 1
            self.state.add_candidates(len(candidates), dict(Counter(c.model for c in candidates)) if several else None)
            st.candidates.extend(candidates)
            self.outcome.candidates += len(candidates)
            self.bar.set_postfix(candidates=self.outcome.candidates)

    def _apply(self, st: TaskState, decision: JobRecord | Finish) -> None:
        if isinstance(decision, Finish):
            return self._finish(st, decision)
        if decision.step == "refine":
            st.refined.append((decision.epoch, decision.parent))
        st.job = decision
        if decision.step == "learn":  # waits for the run's adapter, out of the window
            del self.active[st.task.id]
            return self.learning.wait(st)
        self._send(st)

    def _finish(self, st: TaskState, end: Finish) -> None:
        record = policy.task_record(st, end, self.config.vote)
        self.rundir.append_record(record)
        self.finished[st.task.id] = end.status
        self.state.finish_task(st.task.id, end.status.value,
                               score_task(st.task, record.attempts) if st.task.has_solutions() else None)
        del self.active[st.task.id]  # its candidates are released: what remains is on disk
        self.bar.update(1)
        self.telemetry.progress(len(self.finished))

    # --- the end ---------------------------------------------------------------------------------------
    def _stop_all(self, event: Stopped) -> None:
        # What ended before the stop still counts: it is read (and recorded) before the jobs are given
        # up, since a job that ends after that drops its payload and result (see `attempts.cancel_jobs`).
        refs = {st.task.id: self._record_graded_lanes(st, every=True) for st in self.active.values()}
        ids = [i for st in self.active.values() for i in st.job.ids] + self.learning.revoke()
        if ids:
            cancel_jobs(self.state.r, ids)  # a worker that starts later skips them too (a revoke never reaches it)
            self.app.control.revoke(ids)
        for st in self.learning.release_all():
            self.active[st.task.id] = st
            refs[st.task.id] = self._record_graded_lanes(st, every=True)
        for st in list(self.active.values()):
            job = st.job
            self._apply(st, policy.decide_or_fail(st, event, self.config))
            if job.ids:  # its results and payloads go, as a finished job's do
                ended = [r for r in refs.get(st.task.id, []) if r]
                outcomes.release(self.app, self.state, job, outcomes.Outcome(event, payload_refs=ended))
        for task in self.pending:
            st = self.active[task.id] = TaskState(task, JobRecord(step="search", ids=[]))
            self._apply(st, policy.decide_or_fail(st, event, self.config))

    def _complete(self, final: str) -> RunOutcome:
        _, scores = self.rundir.write_results()
        out = self.outcome
        out.state, out.score = final, (scores.score if scores else None)
        out.note_ends(self.rundir.records())
        self.state.set(state=final, score="" if out.score is None else out.score, finished=time.time(),
                       rss_peak_mb=peak_rss_mb())
        return out


def start_run(run_dir: Path, config: RunConfig, tasks: Sequence[Task], state: RunState) -> RunDir:
    """Write the run directory, then register the run in Redis (so a registered run always has its files)."""
    rundir = RunDir.create(run_dir, config, tasks)
    state.register(str(rundir.path.resolve()), len(tasks), config.dataset,
                   bool(tasks) and all(t.has_solutions() for t in tasks))
    return rundir
