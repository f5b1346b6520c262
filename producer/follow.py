"""Read a run's state from Redis for people: `arcsynth status` (a table) and `arcsynth wait` (a bar)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from celery import Celery
from celery.result import AsyncResult
from tqdm import tqdm

from arcsynth.producer.runstate import STAGES, TASK_STATUSES, TERMINAL, RunState


@dataclass
class StageCounts:
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0


def stage_counts(state: RunState, app: Celery) -> tuple[dict[str, str], dict[str, StageCounts]]:
    """Per stage: tasks waiting in a queue (or in the producer's window), being worked on, done, failed.

    Counters and jobs come from one snapshot; a job's own state is read after it and only moves
    forward, so a finished-but-unhandled job counts as done and every task is counted once."""
    out = {s: StageCounts() for s in STAGES}
    info, counts, jobs = state.snapshot()
    for key, n in counts.items():
        stage, outcome = key.split(":")
        setattr(out[stage], outcome, n)
    finished = state.finished_tasks(info)
    if info.get("state") not in TERMINAL:
        out["sample"].pending += max(0, int(info.get("total", 0)) - finished - len(jobs))  # not yet sent
    run_job = state.run_job()  # scope "run": the epoch's shared fine-tune
    for job in [*jobs.values(), *([run_job] if run_job and run_job.ids else [])]:
        states = [AsyncResult(i, app=app).state for i in job.ids]
        for stage, st in zip(job.stages, states):
            if st in ("SUCCESS", "FAILURE", "REVOKED"):
                # Finished, but the producer has not handled it yet (its counters move then).
                if st == "SUCCESS":
                    out[stage].done += 1
                    continue  # a finished sample: the search goes on in execute
                if st == "FAILURE":
                    out[stage].failed += 1
                break
            bucket = out[stage]
            if st == "STARTED":
                bucket.running += 1
            else:
                bucket.pending += 1
            break
    return info, out


def status_text(state: RunState, app: Celery, needed: Mapping[str, str] | None = None) -> str:
    """The run's state for people. `needed` (queue -> what serves it, `liveness.needed_queues`): while
    the run is unfinished, one line for each of these queues that no answering worker consumes."""
    from arcsynth.producer.liveness import missing_consumers, no_consumer_line

    info, stages = stage_counts(state, app)
    total = int(info.get("total", 0))
    finished = {k: int(info.get(k, 0) or 0) for k in TASK_STATUSES}
    lines = [f"run {state.run_id}: {info.get('state', '?')}  ({info.get('dataset', '')}, {total} tasks)",
             f"run directory: {info.get('run_dir', '?')}"]
    if info.get("state") not in TERMINAL:
        if state.producer_alive(info):
            lines.append(f"producer: running (pid {info.get('producer_pid')} on {info.get('producer_host')})")
        else:
            lines.append(f"producer: not running -- continue with `arcsynth resume {state.run_id}`")
        lines += [no_consumer_line(q, what) for q, what in missing_consumers(app, needed or {}).items()]
    lines.append("tasks: " + ", ".join(f"{v} {k}" for k, v in finished.items())
                 + f", {total - sum(finished.values())} unfinished")
    lines.append(f"{'stage':<10}{'pending':>9}{'running':>9}{'done':>9}{'failed':>9}")
    for stage, c in stages.items():
        lines.append(f"{stage:<10}{c.pending:>9}{c.running:>9}{c.done:>9}{c.failed:>9}")
    waiting = sum(1 for job in state.jobs().values() if job.step == "learn")
    if waiting:
        lines.append(f"waiting for the run's adapter: {waiting} tasks")
    by_model = RunState.candidates_by_model(info)
    lines.append(f"candidates: {info.get('candidates', 0)}"
                 + (" (" + ", ".join(f"{m}: {n}" for m, n in sorted(by_model.items())) + ")" if by_model else ""))
    if info.get("solutions_known") == "1":
        done = sum(finished.values())
        score_sum = float(info.get("score_sum") or 0.0)
        lines.append(f"score so far: {score_sum / max(1, total):.3f} ({score_sum:g} solved of {done} finished)")
    lost = state.lost_workers()
    if info.get("redelivered") or lost:
        alive = _answering(app, lost)
        names = ", ".join(f"{w} ({'answers again' if w in alive else 'not answering'})" for w in lost)
        lines.append(f"jobs handed to another worker after theirs died: {info.get('redelivered', 0)}; "
                     f"workers lost mid-job: {names}")
    if info.get("resent"):
        lines.append(f"job messages lost by the broker and sent again: {info['resent']}")
    if info.get("rss_peak_mb"):
        lines.append(f"producer memory: {info.get('rss_mb', '?')} MB now, {info['rss_peak_mb']} MB peak")
    return "\n".join(lines)


def _answering(app: Celery, workers: list[str]) -> set[str]:
    if not workers:
        return set()
    replies = app.control.ping(destination=workers, timeout=1.0, limit=len(workers))
    return {name for reply in replies for name in reply}


def follow(state: RunState, interval: float = 0.5) -> dict[str, str]:
    """Show a live bar (tasks, candidates, throughput, ETA) until the run ends or its producer dies."""
    info = state.info()
    total = int(info.get("total", 0))
    bar = tqdm(total=total, unit="task", desc=state.run_id, dynamic_ncols=True, mininterval=1.0)
    started, first_cands = time.monotonic(), int(info.get("candidates", 0))
    try:
        while True:
            info = state.info()
            finished = state.finished_tasks(info)
            cands = int(info.get("candidates", 0))
            bar.n = finished
            rate = (cands - first_cands) / max(1e-6, time.monotonic() - started)
            bar.set_postfix(candidates=cands, cand_per_s=f"{rate:.1f}", refresh=False)
            bar.refresh()
            if info.get("state") in TERMINAL:
                return info
            waited = time.monotonic() - started
            if not state.producer_alive(info) and (info.get("state") != "queued" or waited > 60):
                return info  # its producer died (or never started): the caller says how to resume
            time.sleep(interval)  # polling Redis for a person; not a test synchronisation
    finally:
        bar.close()
