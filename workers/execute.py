"""Execute worker: turns one task's completions into graded candidates.

Each pool process owns one sandbox executor; identical programs (the same text) run once and share
their result.
"""

from __future__ import annotations

import logging
import os
import sys

from celery import Celery, signals

from arcsynth.common import formats
from arcsynth.common.augment import Augmentation
from arcsynth.common.extract import ExtractionError
from arcsynth.common.jobs import EXECUTE, ExecuteRequest, ExecuteResult, SampleResult, parse_message
from arcsynth.common.models import Candidate, ExecutionResult, PromptFormat, Task
from arcsynth.common.payloads import payload_url, store_candidates
from arcsynth.common.settings import Settings
from arcsynth.workers.guard import GuardedTask
from arcsynth.workers.sandbox.executor import Executor, IsolationUnavailable

log = logging.getLogger(__name__)


def grade_completions(executor: Executor, task: Task, sampled: SampleResult, epoch: int = 0,
                      augmentation: Augmentation | None = None, job: str = "",
                      fmt: PromptFormat = "arcsynth") -> list[Candidate]:
    """One candidate per completion, in order; identical programs run once. Programs are
    extracted and called as the prompt format says (a `barc` program runs as BARC runs it)."""
    extracted: list[tuple[str | None, str]] = []
    for comp in sampled.completions:
        try:
            extracted.append((formats.extract(fmt, comp.text), ""))
        except ExtractionError as exc:
            extracted.append((None, str(exc)))
    # Keyed by the exact text: programs that differ only in whitespace may still behave differently
    # (inside a string literal), so only identical ones share a run.
    wrapped = {code: formats.entry_wrapper(fmt, code) for code, _ in extracted if code is not None}
    keys = list(wrapped)  # distinct programs in order: one batch (one process in job isolation)
    seen: dict[str, ExecutionResult] = dict(zip(keys, executor.grade_many(task, [wrapped[k] for k in keys], augmentation)))
    view = augmentation.model_dump() if augmentation is not None and not augmentation.is_identity else None
    return [Candidate(task_id=task.id, index=i, code=code, extraction_error=reason, completion=comp, epoch=epoch,
                      adapter=sampled.adapter, parent=sampled.parent, job=job, augmentation=view,
                      execution=seen[code] if code is not None else None)
            for i, (comp, (code, reason)) in enumerate(zip(sampled.completions, extracted))]


def make_executor(settings: Settings) -> Executor:
    return Executor(timeout_s=settings.exec_timeout_s, memory_mb=settings.exec_memory_mb,
                    require=settings.exec_required_layers(), dsl=settings.exec_dsl_paths(),
                    packages=settings.exec_package_names(), isolation=settings.exec_isolation)


def register(app: Celery, settings: Settings) -> None:
    """Add the execute job to `app`; the worker checks its isolation layers before it reports ready."""
    executors: dict[int, Executor] = {}  # one per pool process, made on its first job

    def executor() -> Executor:
        pid = os.getpid()
        if pid not in executors:
            executors.clear()  # a forked child must not share its parent's helper
            executors[pid] = make_executor(settings)
        return executors[pid]

    @signals.worker_init.connect(weak=False)
    def check_isolation(**_: object) -> None:
        """Say which isolation layers runs get here; refuse to start without a required one."""
        probe = make_executor(settings)
        try:
            layers = probe.start()
        except IsolationUnavailable as exc:
            print(f"arcsynth execute worker: {exc}", file=sys.stderr, flush=True)
            os._exit(3)
        finally:
            probe.close()
        active = ", ".join(k for k, v in layers.items() if v) or "none"
        inactive = ", ".join(f"{k} ({probe.why[k]})" if k in probe.why else k
                             for k, v in layers.items() if not v) or "none"
        print(f"arcsynth execute worker: isolation active: {active}; unavailable: {inactive}",
              file=sys.stderr, flush=True)

    @app.task(name=EXECUTE, base=GuardedTask, bind=True, time_limit=settings.execute_time_limit_s)
    def execute_job(self, sampled: dict, request: dict) -> dict:
        """Chained after the sample job: extract, run and grade every completion.

        The candidates go to shared storage under this job's id (a redelivered job rewrites the
        same file); the result names it."""
        req = parse_message(ExecuteRequest, request, "execute request")  # a bad message fails its job in one line
        s = parse_message(SampleResult, sampled, "sample result")
        candidates = grade_completions(executor(), req.task, s, req.epoch, req.augmentation, self.request.id or "",
                                       req.prompt_format)
        ref = ""
        if candidates:
            ref = payload_url(settings.artifact_root, self.request.id)
            store_candidates(ref, candidates)
        return ExecuteResult(task_id=req.task.id, skipped=s.skipped, sample_seconds=s.seconds, count=len(candidates),
                             candidates_ref=ref).model_dump(mode="json")
