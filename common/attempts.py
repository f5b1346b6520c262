"""Where workers record each job's attempts (`arcsynth:job:<id>`), read back by the producer.

A job gets a new attempt only when the worker running the previous one died (the job guard sees
to that), so `attempts > 1` means a worker was lost mid-job and the job was handed out again.
"""

from __future__ import annotations

import redis

from arcsynth.common.jobs import KEY_PREFIX

KEEP_S = 7 * 24 * 3600  # how long a finished job's record is kept when no producer drops it


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}job:{job_id}"


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
