"""Learning across the run (`--learn-scope run`): one adapter per epoch, trained on every task.

Epochs advance in waves. A task that finished an epoch's search (and refinements) and goes on
learning *waits*: its training examples go to the run directory (`learning.jsonl`), its
candidates stay on disk, and it leaves the producer's window, so a run with more tasks than
`--max-active` still gets every task through the epoch. Once no task is in flight, one fine-tune
job trains the epoch's adapter on all the waiting tasks' examples (in the run's task order). When
it is done, the waiting tasks become ready and enter the window again, in batches (one pass over
candidates.jsonl reads their candidates back), each sampling its next epoch through the new
adapter. What each task does next is still the policy's decision; this module only holds tasks
and the run's job. The run's job and each epoch's adapter are kept in Redis (`RunState`), so a
restarted producer re-attaches to the job or finds the adapter trained.
"""

from __future__ import annotations

import uuid

from celery import Celery
from celery.result import AsyncResult

from arcsynth.common.jobs import FinetuneResult, read_result, send_finetune
from arcsynth.common.models import JobRecord, RunConfig, TaskStatus
from arcsynth.producer import policy
from arcsynth.producer.policy import Event, Failed, Finetuned, Stopped, TaskState
from arcsynth.producer.recovery import load_candidates
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState


class RunLearning:
    def __init__(self, app: Celery, rundir: RunDir, state: RunState, config: RunConfig,
                 waiting: dict[str, TaskState]) -> None:
        self.app, self.rundir, self.state, self.config = app, rundir, state, config
        self.job: JobRecord | None = state.run_job()
        self.waiting: dict[str, TaskState] = {}
        self.ready: list[tuple[TaskState, Event]] = []
        for st in waiting.values():
            adapter = state.run_adapter(st.epoch)
            if adapter is not None:  # trained before the producer died
                self.ready.append((st, Finetuned(adapter)))
            else:
                self.waiting[st.task.id] = st

    @property
    def held(self) -> list[TaskState]:
        return [*self.waiting.values(), *(st for st, _ in self.ready)]

    def wait(self, st: TaskState) -> None:
        """The task waits for the run's adapter of its epoch; its candidates go back to disk."""
        examples = policy.training_examples(st, self.config.learn, self.config.prompt_format)
        self.rundir.append_learning(st.epoch, st.task.id, examples)
        self.state.put_job(st.task.id, st.job)
        st.candidates, st.refined = [], []
        self.waiting[st.task.id] = st

    def release_all(self) -> list[TaskState]:
        """Every task held here, with its candidates read back (the run is ending)."""
        held, self.waiting, self.ready = self.held, {}, []
        load_candidates(self.rundir, {st.task.id: st for st in held if not st.candidates})
        return held

    def take_ready(self, room: int) -> list[tuple[TaskState, Event]]:
        """Up to `room` ready tasks with their candidates read back, in batches of at least half
        the window (one pass over candidates.jsonl per batch), or all that are left."""
        if not self.ready or (room < len(self.ready) and room < self.config.max_active // 2):
            return []
        batch, self.ready = self.ready[:room], self.ready[room:]
        load_candidates(self.rundir, {st.task.id: st for st, _ in batch})
        return batch

    def poll(self, nothing_in_flight: bool) -> list[tuple[TaskState, Event]]:
        """Send the epoch's fine-tune once nothing else is in flight; when it has finished, make
        the waiting tasks ready. Returns events to apply now (a failed or impossible fine-tune)."""
        if self.job is None:
            if not (nothing_in_flight and self.waiting):
                return []
            return self._send_new()
        if not self.job.sent:
            self._send(self.job)
            return []
        result = AsyncResult(self.job.ids[0], app=self.app)
        if not result.ready():
            return []
        job, self.job = self.job, None
        if not result.successful():
            self.state.count("finetune", "failed")
            self.state.finish_run_job(job.epoch, "")
            result.forget()
            return [(st, Failed("finetune", f"{type(result.result).__name__}: {result.result}")) for st in self.release_all()]
        waiting, self.waiting = list(self.waiting.values()), {}
        trained = read_result(self.app, job.ids[0], "finetune")
        assert isinstance(trained, FinetuneResult)
        self.state.count("finetune", "done")
        self.state.finish_run_job(job.epoch, trained.adapter)
        result.forget()
        self.ready.extend((st, Finetuned(trained.adapter)) for st in waiting)
        return []

    def _send_new(self) -> list[tuple[TaskState, Event]]:
        epochs = {st.epoch for st in self.waiting.values()}
        assert len(epochs) == 1, f"tasks wait at several epochs at once: {sorted(epochs)}"
        (epoch,) = epochs
        adapter = next(iter(self.waiting.values())).adapter
        if self._request(epoch, adapter) is None:
            return [(st, Stopped(TaskStatus.DONE, policy.NOTHING_TO_LEARN + " in the whole run"))
                    for st in self.release_all()]
        self.job = JobRecord(step="finetune", epoch=epoch, adapter=adapter, ids=[uuid.uuid4().hex])
        self.state.put_run_job(self.job)
        self._send(self.job)
        return []

    def _request(self, epoch: int, adapter: str):
        examples = {tid: ex for tid, ex in self.rundir.learning(epoch).items() if tid in self.waiting}
        return policy.run_finetune_request(examples, self.config, adapter)

    def _send(self, job: JobRecord) -> None:
        request = self._request(job.epoch, job.adapter)
        assert request is not None
        send_finetune(self.app, job.ids[0], request)
        self.job = job.model_copy(update={"sent": True})
        self.state.put_run_job(self.job)

    def revoke(self) -> list[str]:
        return list(self.job.ids) if self.job else []
