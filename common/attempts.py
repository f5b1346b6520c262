"""Where workers record each job's attempts (`arcsynth:job:<id>`), read back by the producer, and
each job's lease (`arcsynth:lease:<id>`, taken by the job guard in workers/guard.py).

A job gets a new attempt only when the worker running the previous one died (the job guard sees
to that), so `attempts > 1` means a worker was lost mid-job and the job was handed out again.
A lease says who runs the job, or `done` once its result is stored, or `cancelled` once the
producer gave the job up (`cancel_jobs`).
"""

from __future__ import annotations

import redis

from arcsynth.common.jobs import KEY_PREFIX

KEEP_S = 7 * 24 * 3600  # how long a finished job's record is kept when no producer drops it
DONE, CANCELLED = "done", "cancelled"  # what a lease says once its job's result is stored, or once it was given up


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}job:{job_id}"


def lease_key(job_id: str) -> str:
    return f"{KEY_PREFIX}lease:{job_id}"


def cancel_jobs(r: redis.Redis, job_ids: list[str]) -> None:
    """Mark jobs of a run that stopped (timed out or cancelled) as given up, for `KEEP_S`.

    A Celery revoke reaches only the workers alive when it is sent: a worker started later (a
    restart, a pool scaled up from zero on queue length) would still run the job's message. With
    its lease saying `cancelled`, a delivery that has not started skips the job, and one already
    running drops what it made (its payload and stored result) once it ends, since no producer
    will collect them."""
    if job_ids:
        with r.pipeline(transaction=False) as p:
            for job_id in job_ids:
                p.set(lease_key(job_id), CANCELLED, ex=KEEP_S)
            p.execute()


def job_attempts(r: redis.Redis, job_ids: list[str]) -> dict[str, tuple[int, list[str]]]:
    """Per job: how many deliveries started it, and on which workers (in order)."""
    with r.pipeline(transaction=False) as p:
        for i in job_ids:
            p.hmget(job_key(i), "attempts", "workers")
        rows = p.execute()
    return {i: (int(a or 0), [w for w in (ws or "").split(",") if w]) for i, (a, ws) in zip(job_ids, rows)}


def record_attempt(r: redis.Redis, job_id: str, workers: list[str]) -> None:
    with r.pipeline() as p:
        p.hset(job_key(job_id), mapping={"attempts": len(workers), "workers": ",".join(workers)})
        p.expire(job_key(job_id), KEEP_S)
        p.execute()


def forget_jobs(r: redis.Redis, job_ids: list[str]) -> None:
    """Drop the records of jobs the producer has handled."""
    if job_ids:
        r.delete(*(job_key(i) for i in job_ids))
