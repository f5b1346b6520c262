"""Orchestrate one run: enqueue sample→execute per task, stream candidates to disk, pick attempts.

Candidates are written to `candidates.jsonl` as each task finishes, so a long run never holds
them all in memory; the run directory ends with `submission.json` (always valid: unfinished or
skipped tasks get placeholder attempts) and `score.json` when the test outputs are known.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery, chain
from tqdm import tqdm

from common.celery_app import EXECUTE, SAMPLE
from common.models import Attempt, Candidate, RunConfig, SamplingConfig, Task
from common.scoring import score_run, select_attempts
from common.submission import write_json_atomic, write_submission


@dataclass
class RunOutcome:
    run_dir: Path
    submission: Path
    score: float | None
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    candidates: int = 0


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def enqueue_task(app: Celery, task: Task, sampling: SamplingConfig, adapter: str = "", epoch: int = 0):
    payload = task.model_dump()
    return chain(
        app.signature(SAMPLE, args=(payload, sampling.model_dump(), adapter)),
        app.signature(EXECUTE, args=(payload, epoch)),
    ).apply_async()


def run_tasks(app: Celery, tasks: Sequence[Task], sampling: SamplingConfig, run_dir: Path,
              config: RunConfig, adapter: str = "", progress: bool = True,
              timeout: float | None = None) -> RunOutcome:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "run.json", config.model_dump())
    pending = {t.id: enqueue_task(app, t, sampling, adapter) for t in tasks}
    attempts: dict[str, list[Attempt]] = {}
    outcome = RunOutcome(run_dir=run_dir, submission=run_dir / "submission.json", score=None)
    by_id = {t.id: t for t in tasks}
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = tqdm(total=len(tasks), unit="task", disable=not progress, desc="tasks")
    with open(run_dir / "candidates.jsonl", "w") as cand_file, open(run_dir / "tasks.jsonl", "w") as task_file:
        while pending:
            progressed = False
            for task_id, res in list(pending.items()):
                if not res.ready():
                    continue
                progressed = True
                del pending[task_id]
                status: dict = {"task_id": task_id}
                if res.successful():
                    payload = res.get(disable_sync_subtasks=False)
                    cands = [Candidate.model_validate(c) for c in payload["candidates"]]
                    for c in cands:
                        cand_file.write(c.model_dump_json() + "\n")
                    cand_file.flush()
                    attempts[task_id] = select_attempts(by_id[task_id], cands)
                    outcome.candidates += len(cands)
                    if payload.get("skipped"):
                        outcome.skipped[task_id] = payload["skipped"]
                        status.update(status="skipped", reason=payload["skipped"])
                    else:
                        status.update(status="done", candidates=len(cands),
                                      train_correct=sum(1 for c in cands if c.execution and c.execution.all_train_correct))
                else:
                    reason = f"{type(res.result).__name__}: {res.result}"
                    outcome.failed[task_id] = reason
                    status.update(status="failed", reason=reason)
                task_file.write(json.dumps(status) + "\n")
                task_file.flush()
                bar.update(1)
                bar.set_postfix(candidates=outcome.candidates)
            if deadline is not None and time.monotonic() > deadline:
                for task_id, res in pending.items():
                    res.revoke()
                    outcome.failed[task_id] = "timed out"
                break
            if not progressed:
                time.sleep(0.1)  # polling the result backend; not a test synchronisation
    bar.close()
    write_submission(outcome.submission, tasks, attempts)
    if all(t.has_solutions() for t in tasks):
        scores = score_run(tasks, attempts)
        outcome.score = scores["score"]
        write_json_atomic(run_dir / "score.json", scores)
    return outcome
