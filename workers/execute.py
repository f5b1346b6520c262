"""Execute worker: turns one task's completions into graded candidates.

Each pool process owns one sandbox helper; identical programs (after whitespace normalisation)
run once and share their result.
"""

from __future__ import annotations

import logging
import os
import sys

from arcsynth.common.augment import Augmentation
from arcsynth.common.celery_app import EXECUTE, app
from arcsynth.common.extract import ExtractionError, extract_code
from arcsynth.common.models import Candidate, ExecutionResult, SampleResult, Task
from arcsynth.common.payloads import payload_url, store_candidates
from arcsynth.common.settings import get_settings
from arcsynth.workers.guard import GuardedTask
from arcsynth.workers.sandbox.executor import Executor, IsolationUnavailable, normalise
from celery import signals

log = logging.getLogger(__name__)
_executor: Executor | None = None


def executor() -> Executor:
    global _executor
    if _executor is None:
        s = get_settings()
        _executor = Executor(timeout_s=s.exec_timeout_s, memory_mb=s.exec_memory_mb,
                             require=s.exec_required_layers(), dsl=s.exec_dsl_paths())
    return _executor


@signals.worker_init.connect
def check_isolation(**_: object) -> None:
    """Say which isolation layers runs get here; refuse to start without a required one."""
    s = get_settings()
    probe = Executor(require=s.exec_required_layers(), dsl=s.exec_dsl_paths())
    try:
        layers = probe.start()
    except IsolationUnavailable as exc:
        print(f"arcsynth execute worker: {exc}", file=sys.stderr, flush=True)
        os._exit(3)
    finally:
        probe.close()
    active = ", ".join(k for k, v in layers.items() if v) or "none"
    inactive = ", ".join(k for k, v in layers.items() if not v) or "none"
    print(f"arcsynth execute worker: isolation active: {active}; unavailable: {inactive}",
          file=sys.stderr, flush=True)


def grade_completions(task: Task, sampled: SampleResult, epoch: int = 0,
                      augmentation: Augmentation | None = None) -> list[Candidate]:
    seen: dict[str, ExecutionResult] = {}
    out = []
    for i, comp in enumerate(sampled.completions):
        try:
            code: str | None = extract_code(comp.text)
            reason = ""
        except ExtractionError as exc:
            code, reason = None, str(exc)
        execution = None
        if code is not None:
            key = normalise(code)
            if key not in seen:
                seen[key] = executor().grade(task, code, augmentation)
            execution = seen[key]
        out.append(Candidate(task_id=task.id, index=i, code=code, extraction_error=reason,
                             completion=comp, epoch=epoch, adapter=sampled.adapter, parent=sampled.parent,
                             execution=execution))
    return out


@app.task(name=EXECUTE, base=GuardedTask, bind=True, time_limit=get_settings().execute_time_limit_s)
def execute(self, sampled: dict, task: dict, epoch: int = 0, augmentation: dict | None = None) -> dict:
    """Chained after `arcsynth.sample`: extract, run and grade every completion.

    `task` is the original task; `augmentation` is how the prompt showed it, if at all. The
    candidates go to shared storage under this job's id (a redelivered job rewrites the same
    file); the result names it.
    """
    t = Task.model_validate(task)
    s = SampleResult.model_validate(sampled)
    aug = Augmentation.model_validate(augmentation) if augmentation else None
    candidates = grade_completions(t, s, epoch, aug)
    ref = ""
    if candidates:
        ref = payload_url(get_settings().artifact_root, self.request.id)
        store_candidates(ref, candidates)
    return {"task_id": t.id, "skipped": s.skipped, "sample_seconds": s.seconds, "count": len(candidates),
            "candidates_ref": ref}
