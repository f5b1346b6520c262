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
restarted producer re-attaches to the job or finds the adapter trained. In a run with several
models each model trains its own adapter of the epoch on its own programs: the run's job then has
one lane (one fine-tune) per model that has examples.
"""

from __future__ import annotations

import uuid

from celery import Celery
from celery.result import AsyncResult

from arcsynth.common.jobs import FinetuneResult, read_result, send_finetune
from arcsynth.common.models import RunConfig
from arcsynth.common.records import JobRecord, TaskStatus
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
                self.ready.append((st, Finetuned(adapter, state.run_adapters(st.epoch))))
            else:
                self.waiting[st.task.id] = st

    @property
    def held(self) -> list[TaskState]:
        return [*self.waiting.values(), *(st for st, _ in self.ready)]

    @property
    def several(self) -> bool:
        return len(self.config.all_models) > 1

    def wait(self, st: TaskState) -> None:
        """The task waits for the run's adapter of its epoch; its candidates go back to disk."""
        learn, fmt = self.config.learn, self.config.prompt_format
        if self.several:
            for model in self.config.all_models:
                self.rundir.append_learning(st.epoch, st.task.id, policy.training_examples(st, learn, fmt, model), model)
        else:
            self.rundir.append_learning(st.epoch, st.task.id, policy.training_examples(st, learn, fmt))
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
        results = [(model, AsyncResult(ids[0], app=self.app)) for model, ids in self.job.lanes()]
        if not all(r.ready() for _, r in results):
            return []
        job, self.job = self.job, None
        failed = next((r for _, r in results if not r.successful()), None)
        if failed is not None:
            self.state.count("finetune", "failed")
            self.state.finish_run_job(job.epoch, "")
            for _, r in results:
                r.forget()
            return [(st, Failed("finetune", f"{type(failed.result).__name__}: {failed.result}")) for st in self.release_all()]
        waiting, self.waiting = list(self.waiting.values()), {}
        trained: dict[str, str] = {}
        for model, r in results:
            result = read_result(self.app, r.id, "finetune")
            assert isinstance(result, FinetuneResult)
            trained[model] = result.adapter
            self.state.count("finetune", "done")
            r.forget()
        first = next(iter(trained.values()))
        by_model = {m: a for m, a in trained.items() if m} if self.several else {}
        self.state.finish_run_job(job.epoch, first, by_model)
        self.ready.extend((st, Finetuned(first, by_model)) for st in waiting)
        return []

    def _send_new(self) -> list[tuple[TaskState, Event]]:
        epochs = {st.epoch for st in self.waiting.values()}
        assert len(epochs) == 1, f"tasks wait at several epochs at once: {sorted(epochs)}"
        (epoch,) = epochs
        sampled = next(iter(self.waiting.values())).job  # every waiting task sampled through the same adapters
        learners = [m for m in self.config.all_models if self._request(epoch, sampled.adapter_for(m), m) is not None]
        if not learners:
            return [(st, Stopped(TaskStatus.DONE, policy.NOTHING_TO_LEARN + " in the whole run"))
                    for st in self.release_all()]
        self.job = JobRecord(step="finetune", epoch=epoch, adapter=sampled.adapter, adapters=sampled.adapters,
                             models=learners if self.several else [], ids=[uuid.uuid4().hex for _ in learners])
        self.state.put_run_job(self.job)
        self._send(self.job)
        return []

    def _request(self, epoch: int, adapter: str, model: str):
        own = model if self.several else ""
        examples = {tid: ex for tid, ex in self.rundir.learning(epoch, own).items() if tid in self.waiting}
        return policy.run_finetune_request(examples, self.config, adapter, own)

    def _send(self, job: JobRecord) -> None:
        for model, ids in job.lanes():
            model = model or self.config.model
            request = self._request(job.epoch, job.adapter_for(model), model)
            assert request is not None
            send_finetune(self.app, ids[0], request)
        self.job = job.model_copy(update={"sent": True})
        self.state.put_run_job(self.job)

    def revoke(self) -> list[str]:
        return list(self.job.ids) if self.job else []
