"""Drive a run: per task, search → execute → (relabel → fine-tune → search again)*.

The producer holds little: a window of `max_active` tasks in flight, each with the candidates of
its own earlier epochs. Everything else is in the run directory (candidates and finished tasks,
appended as they arrive) or in Redis (the job each task waits on, counters). A producer killed at
any point is replaced by `Driver(...).run()` on the same directory: finished tasks are not
touched, tasks in flight re-attach to their jobs by id, and a job that was recorded but perhaps
never sent is sent again under the same id.
"""

from __future__ import annotations

import random
import resource
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arcsynth.common import payloads
from arcsynth.common.attempts import forget_jobs, job_attempts
from arcsynth.common.augment import Augmentation, random_augmentation
from arcsynth.common.celery_app import EXECUTE, FINETUNE, SAMPLE
from arcsynth.common.models import (
    Candidate,
    EpochCounts,
    FinetuneRequest,
    JobRecord,
    LearnConfig,
    RunConfig,
    SamplingConfig,
    Task,
    TaskRecord,
)
from arcsynth.common.redis_client import redis_client
from arcsynth.common.relabel import relabel
from arcsynth.common.scoring import score_task, select_attempts
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState
from celery import Celery, chain
from celery.result import AsyncResult
from tqdm import tqdm

__all__ = ["Driver", "LearnConfig", "RunOutcome", "new_run_id", "run_tasks"]


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


@dataclass
class _Active:
    task: Task
    job: JobRecord
    adapter: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    tried: set[tuple[int, str]] = field(default_factory=set)  # (epoch, fingerprint) of programs refined

    @property
    def epoch(self) -> int:
        return self.job.epoch


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class Driver:
    """The producer of one run; `run()` drives it to the end, `cancel()` ends it early."""

    def __init__(self, app: Celery, rundir: RunDir, state: RunState, progress: bool = False) -> None:
        self.app, self.rundir, self.state = app, rundir, state
        rundir.repair()
        self.config: RunConfig = rundir.config()
        self.learn: LearnConfig = self.config.learn
        # Held in memory: task ids and statuses, and the tasks in flight with their candidates.
        # Tasks are read from inputs.jsonl as they are started; finished ones live on disk.
        self.total = len(self.config.task_ids)
        self.finished: dict[str, str] = {tid: r.status for tid, r in rundir.records().items()}
        jobs = {tid: j for tid, j in state.jobs().items() if tid not in self.finished}
        for tid in set(state.jobs()) & set(self.finished):
            state.drop_job(tid)  # finished, but the producer died before dropping its job
        self.active: dict[str, _Active] = {t.id: _Active(t, jobs[t.id], jobs[t.id].adapter)
                                           for t in rundir.iter_tasks() if t.id in jobs}
        # (task, epoch, parent) whose candidates are already on disk; parent: "" for a search
        self.recorded: set[tuple[str, int, str]] = set()
        for c in rundir.candidates(set(self.active)):
            self.active[c.task_id].candidates.append(c)
            self.recorded.add((c.task_id, c.epoch, c.parent))
            if c.parent:
                self.active[c.task_id].tried.add((c.epoch, c.parent))
        for st in self.active.values():
            if st.job.stage == "refine":
                st.tried.add((st.job.epoch, st.job.parent))
        attached = set(self.active)
        self.pending: Iterator[Task] = (t for t in rundir.iter_tasks()
                                        if t.id not in self.finished and t.id not in attached)
        self.outcome = RunOutcome(run_dir=rundir.path, submission=rundir.path / "submission.json", score=None)
        self.bar = tqdm(total=self.total, initial=len(self.finished), unit="task", disable=not progress, desc="tasks")
        self._checkpoints = [q for q in (25, 50, 75, 100)]
        self._last_beat = 0.0

    # --- enqueueing -------------------------------------------------------------------------------
    def _augmentation(self, task_id: str, epoch: int) -> Augmentation | None:
        if not self.learn.augment:
            return None
        return random_augmentation(random.Random(f"{task_id}:{epoch}"))

    def _sampling(self, epoch: int, refine: bool = False) -> SamplingConfig:
        s = self.config.sampling
        if refine:
            return s.model_copy(update={"n": self.learn.refine_samples})
        return s if epoch == 0 else s.model_copy(update={"n": self.learn.samples_per_epoch})

    def _send(self, st: _Active) -> None:
        """Record the job under fresh ids, send it, then mark it sent (see the module docstring)."""
        if not st.job.ids:
            st.job = st.job.model_copy(update={"ids": [uuid.uuid4().hex for _ in st.job.stages], "sent": False})
            self.state.put_job(st.task.id, st.job)
        job = st.job
        if job.stage == "refine":
            parent = next(c for c in st.candidates if c.execution and c.execution.fingerprint == job.parent)
            refine = {"code": parent.code, "execution": parent.execution.model_dump(), "parent": job.parent}
            chain(
                self.app.signature(SAMPLE, args=(st.task.model_dump(), self._sampling(job.epoch, refine=True).model_dump(),
                                                 job.adapter, refine), task_id=job.ids[0]),
                self.app.signature(EXECUTE, args=(st.task.model_dump(), job.epoch, None), task_id=job.ids[1]),
            ).apply_async()
        elif job.stage == "search":
            aug = Augmentation.model_validate(job.augmentation) if job.augmentation else None
            shown = st.task if aug is None else aug.apply_task(st.task)
            chain(
                self.app.signature(SAMPLE, args=(shown.model_dump(), self._sampling(job.epoch).model_dump(), job.adapter),
                                   task_id=job.ids[0]),
                self.app.signature(EXECUTE, args=(st.task.model_dump(), job.epoch, job.augmentation), task_id=job.ids[1]),
            ).apply_async()
        else:
            examples = relabel(st.task, st.candidates, limit=self.learn.max_examples)
            req = FinetuneRequest(base_model=self.learn.base_model or self.config.model, examples=examples,
                                  lora=self.learn.lora, train=self.learn.train,
                                  start_adapter="" if self.learn.from_base else job.adapter)
            self.app.signature(FINETUNE, args=(req.model_dump(),), task_id=job.ids[0]).apply_async()
        st.job = job.model_copy(update={"sent": True})
        self.state.put_job(st.task.id, st.job)

    def _search(self, st: _Active, epoch: int) -> None:
        aug = self._augmentation(st.task.id, epoch)
        st.job = JobRecord(stage="search", epoch=epoch, adapter=st.adapter, ids=[],
                           augmentation=aug.model_dump() if aug else None)
        self._send(st)

    def _start(self, task: Task) -> None:
        st = _Active(task, JobRecord(stage="search", ids=[]), adapter=self.config.adapter)
        self.active[task.id] = st
        self._search(st, 0)

    # --- results ----------------------------------------------------------------------------------
    def _poll(self) -> bool:
        progressed = False
        for st in list(self.active.values()):
            result = AsyncResult(st.job.ids[-1], app=self.app)
            if not result.ready():
                continue
            progressed = True
            done_ids, payload_ref = st.job.ids, ""
            stages = st.job.stages
            if not result.successful():
                failed_at = stages[0]
                if len(stages) == 2 and AsyncResult(st.job.ids[0], app=self.app).successful():
                    self.state.count("sample", "done")
                    failed_at = "execute"
                self.state.count(failed_at, "failed")
                self._finish(st, "failed", f"{failed_at}: {type(result.result).__name__}: {result.result}")
            else:
                payload = result.get(disable_sync_subtasks=False)
                payload_ref = payload.get("candidates_ref", "")
                for stage in stages:
                    self.state.count(stage, "done")
                if st.job.stage == "finetune":
                    self._on_finetune(st, payload)
                else:
                    self._on_search(st, payload)
            self._note_attempts(done_ids)
            for job_id in done_ids:  # the task's next job (or its record) is stored: drop the result
                AsyncResult(job_id, app=self.app).forget()
            if payload_ref:
                payloads.drop(payload_ref)
        return progressed

    def _note_attempts(self, job_ids: list[str]) -> None:
        """Count jobs that a lost worker left behind (they ran again elsewhere), then drop their records."""
        attempts = job_attempts(self.state.r, job_ids)
        lost = [w for n, workers in attempts.values() if n > 1 for w in workers[:-1]]
        if lost:
            self.state.note_redelivered(sum(1 for n, _ in attempts.values() if n > 1), lost)
        forget_jobs(self.state.r, job_ids)

    def _on_search(self, st: _Active, payload: dict) -> None:
        ref = payload.get("candidates_ref")
        cands = payloads.load_candidates(ref) if ref else [Candidate.model_validate(c) for c in payload.get("candidates", [])]
        key = (st.task.id, st.epoch, st.job.parent)
        if key not in self.recorded:
            with open(self.rundir.candidates_file, "a") as f:
                f.writelines(c.model_dump_json() + "\n" for c in cands)
            self.recorded.add(key)
            self.state.add_candidates(len(cands))
            st.candidates.extend(cands)
        self.outcome.candidates += len(cands)
        self.bar.set_postfix(candidates=self.outcome.candidates)
        if payload.get("skipped") and st.job.stage != "refine":  # a refinement too long to prompt: go on
            return self._finish(st, "skipped", payload["skipped"])
        solved = any(c.execution and c.execution.all_train_correct for c in st.candidates)
        if not solved and self._refine(st):
            return
        if st.epoch >= self.learn.epochs or (solved and self.learn.stop_when_solved):
            return self._finish(st, "done")
        if not relabel(st.task, st.candidates, limit=self.learn.max_examples):
            return self._finish(st, "done", "nothing to learn from: no program ran cleanly")
        st.job = JobRecord(stage="finetune", epoch=st.epoch, adapter=st.adapter, ids=[])
        self._send(st)

    def _refine(self, st: _Active) -> bool:
        """Send the next refinement of this epoch, if rounds are left and a program is worth fixing."""
        if sum(1 for epoch, _ in st.tried if epoch == st.epoch) >= self.learn.refine_rounds:
            return False
        worth = [c for c in st.candidates if c.epoch == st.epoch and c.code and c.execution
                 and (st.epoch, c.execution.fingerprint) not in st.tried and not c.execution.all_train_correct
                 and any(r.output is not None for r in c.execution.train)]
        if not worth:
            return False
        best = max(worth, key=lambda c: (c.execution.train_pixel_accuracy, -c.index))
        st.tried.add((st.epoch, best.execution.fingerprint))
        st.job = JobRecord(stage="refine", epoch=st.epoch, adapter=st.adapter, ids=[], parent=best.execution.fingerprint)
        self._send(st)
        return True

    def _on_finetune(self, st: _Active, payload: dict) -> None:
        st.adapter = payload["adapter"]
        self.outcome.adapters.setdefault(st.task.id, []).append(st.adapter)
        self._search(st, st.epoch + 1)

    def _finish(self, st: _Active, status: str, reason: str = "") -> None:
        task_id = st.task.id
        per_epoch: dict[int, EpochCounts] = {}
        for c in st.candidates:
            e = per_epoch.setdefault(c.epoch, EpochCounts())
            e.candidates += 1
            e.valid += int(c.execution is not None and all(r.error == "none" for r in c.execution.train))
            e.train_correct += int(bool(c.execution and c.execution.all_train_correct))
        record = TaskRecord(task_id=task_id, status=status, reason=reason, epochs=st.epoch, adapter=st.adapter,
                            per_epoch=per_epoch, attempts=select_attempts(st.task, st.candidates))
        with open(self.rundir.tasks_file, "a") as f:
            f.write(record.model_dump_json() + "\n")
        self.finished[task_id] = status
        self.state.finish_task(task_id, status,
                               score_task(st.task, record.attempts) if st.task.has_solutions() else None)
        del self.active[task_id]  # its candidates are released: what remains is on disk
        self.bar.update(1)
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Memory at 25/50/75/100 % of tasks finished: shows whether the producer stays flat."""
        pct = 100 * len(self.finished) // max(1, self.total)
        while self._checkpoints and pct >= self._checkpoints[0]:
            self.state.set(**{f"rss_mb_at_{self._checkpoints.pop(0)}": round(rss_mb(), 1)})

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= 1.0:
            self._last_beat = now
            self.state.heartbeat(rss_mb=round(rss_mb(), 1),
                                 rss_peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))

    # --- driving ----------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Drive every unfinished task to the end (or until cancelled or timed out)."""
        if self.state.state() in ("cancelling", "cancelled"):
            return self.cancel()
        self.state.claim()
        self._checkpoint()
        deadline = None if self.config.timeout_s is None else time.monotonic() + self.config.timeout_s
        try:
            for st in self.active.values():
                if not st.job.sent:
                    self._send(st)
            exhausted = False
            while self.active or not exhausted:
                self._beat()
                if self.state.state() == "cancelling":
                    return self.cancel()
                if deadline is not None and time.monotonic() > deadline:
                    self._stop_all("failed", "timed out")
                    break
                while not exhausted and len(self.active) < self.config.max_active:
                    task = next(self.pending, None)
                    if task is None:
                        exhausted = True
                    else:
                        self._start(task)
                if not self._poll():
                    time.sleep(0.1)  # polling the result backend; not a test synchronisation
        finally:
            self.bar.close()
        return self._complete("done")

    def cancel(self) -> RunOutcome:
        """Revoke what has not started, record unfinished tasks as cancelled, write the results."""
        self.state.set(state="cancelling")
        self._stop_all("cancelled", "cancelled")
        return self._complete("cancelled")

    def _stop_all(self, status: str, reason: str) -> None:
        ids = [i for st in self.active.values() for i in st.job.ids]
        if ids:
            self.app.control.revoke(ids)
        for st in list(self.active.values()):
            self._finish(st, status, reason)
        for task in self.pending:
            st = _Active(task, JobRecord(stage="search", ids=[]))
            self.active[task.id] = st
            self._finish(st, status, reason)

    def _complete(self, final: str) -> RunOutcome:
        submission, scores = self.rundir.write_results()
        out = self.outcome
        out.state = final
        out.score = scores["score"] if scores else None
        for tid, rec in self.rundir.records().items():
            if rec.status == "skipped":
                out.skipped[tid] = rec.reason
            elif rec.status in ("failed", "cancelled"):
                out.failed[tid] = rec.reason
        self.state.set(state=final, score="" if out.score is None else out.score, finished=time.time(),
                       rss_peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
        return out


def start_run(run_dir: Path, config: RunConfig, tasks: Sequence[Task], state: RunState) -> RunDir:
    """Write the run directory, then register the run in Redis (so a registered run always has its files)."""
    rundir = RunDir.create(run_dir, config, tasks)
    state.register(str(rundir.path.resolve()), len(tasks), config.dataset,
                   bool(tasks) and all(t.has_solutions() for t in tasks))
    return rundir


def run_tasks(app: Celery, tasks: Sequence[Task], sampling: SamplingConfig, run_dir: Path,
              config: RunConfig, adapter: str = "", progress: bool = True,
              timeout: float | None = None, learn: LearnConfig | None = None) -> RunOutcome:
    """Create a run and drive it in this process (as `arcsynth local` and the tests do)."""
    config = config.model_copy(update={"sampling": sampling, "adapter": adapter or config.adapter,
                                       "learn": learn or config.learn,
                                       "timeout_s": timeout if timeout is not None else config.timeout_s})
    state = RunState(redis_client(app.conf.broker_url), config.run_id)
    rundir = start_run(run_dir, config, tasks, state)
    return Driver(app, rundir, state, progress=progress).run()
