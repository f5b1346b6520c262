"""A run's live state in Redis: what `runs`, `status`, `wait`, `cancel` and `resume` read.

Keys (all under `arcsynth:`):
- `runs`: sorted set of run ids by creation time.
- `run:<id>`: hash of fields (run_dir, state, total, done/failed/skipped/cancelled, candidates,
  `candidates:<model>` for each model of a run with several, producer pid/host/heartbeat, memory,
  score).
- `run:<id>:jobs`: hash task id -> JobRecord (the job each unfinished task waits on).
- `run:<id>:counts`: hash `<stage>:<done|failed>` -> count, stage in sample/execute/finetune.
- `run:<id>:driver`: held by a command deciding who drives the run (`resume` while it starts a
  producer, `cancel` while it finishes a run whose producer is gone), so that two never both do.
- `run:<id>:lost`: set of workers that died in the middle of one of the run's jobs.
- `run:<id>:learning`: scope "run" only: the run's own fine-tune job (`job`) and the adapter
  each epoch trained (`adapter:<epoch>`; in a run with several models, also `adapters:<epoch>`,
  the JSON of model -> adapter).
Nothing large goes here: candidates stay in the run directory.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from arcsynth.common.jobs import KEY_PREFIX, STAGES
from arcsynth.common.lifetime import pid_alive
from arcsynth.common.records import JobRecord, TaskStatus

__all__ = ["STAGES", "TASK_STATUSES", "TERMINAL", "RunBusy", "RunState", "list_runs"]

TERMINAL = ("done", "cancelled", "failed")  # states of a whole run that has ended
_CLAIM = ("local s = redis.call('hget', KEYS[1], 'state') "
          "if s == 'cancelling' or s == 'cancelled' then return s end "
          "redis.call('hset', KEYS[1], 'state', 'running', 'producer_pid', ARGV[1], 'producer_host', ARGV[2], "
          "'heartbeat', ARGV[3]) return 'running'")
TASK_STATUSES = tuple(s.value for s in TaskStatus)  # the run's per-status task counters
HEARTBEAT_STALE_S = 15.0  # a producer silent this long is taken for dead
DRIVER_LOCK_S = 120.0  # a `driving()` holder killed mid-way frees the run after this long
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class RunBusy(RuntimeError):
    """Another command has been deciding who drives the run for longer than `driving()` waits."""


@dataclass
class RunState:
    """Writes that move a task between stages are one transaction each, so a reader's snapshot
    (`snapshot()`) always sees every task in exactly one place."""

    r: redis.Redis
    run_id: str
    _counts: list[str] = field(default_factory=list)  # stage counters waiting for the next transition

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}run:{self.run_id}"

    @property
    def jobs_key(self) -> str:
        return self.key + ":jobs"

    @property
    def counts_key(self) -> str:
        return self.key + ":counts"

    # --- registration and fields -------------------------------------------------------------
    def register(self, run_dir: str, total: int, dataset: str, solutions_known: bool) -> None:
        now = time.time()
        with self.r.pipeline() as p:
            p.hset(self.key, mapping={"run_dir": run_dir, "state": "queued", "total": total, "dataset": dataset,
                                      "created": now, **dict.fromkeys(TASK_STATUSES, 0),
                                      "candidates": 0, "score_sum": 0, "solutions_known": int(solutions_known)})
            p.zadd(KEY_PREFIX + "runs", {self.run_id: now})
            p.execute()

    def exists(self) -> bool:
        return bool(self.r.exists(self.key))

    def info(self) -> dict[str, str]:
        return self.r.hgetall(self.key)

    def get(self, field: str) -> str | None:
        return self.r.hget(self.key, field)

    def set(self, **fields: object) -> None:
        self.r.hset(self.key, mapping={k: ("" if v is None else v) for k, v in fields.items()})

    def state(self) -> str:
        return self.get("state") or ""

    def claim(self) -> str:
        """Mark this process as the run's producer (pid, host, heartbeat) and the run running, unless it
        is being cancelled or was: in one step, so a cancel asked for meanwhile is never overwritten.
        The run's state now."""
        return self.r.eval(_CLAIM, 1, self.key, os.getpid(), socket.gethostname(), time.time())

    @contextmanager
    def driving(self, wait_s: float = 30.0) -> Iterator[None]:
        """Held while a command checks that the run has no live producer and becomes or starts one
        (`resume`, an in-process `cancel`): two such commands at once, which would both drive the
        run and record its tasks twice, take turns. `RunBusy` after `wait_s` of waiting."""
        key, token = self.key + ":driver", uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while not self.r.set(key, token, nx=True, px=int(DRIVER_LOCK_S * 1000)):
            if time.monotonic() > deadline:
                raise RunBusy(f"run {self.run_id}: another `resume` or `cancel` is still at work on it")
            time.sleep(0.1)
        try:
            yield
        finally:
            self.r.eval(_RELEASE, 1, key, token)

    def heartbeat(self, **fields: object) -> None:
        self.set(heartbeat=time.time(), **fields)

    def producer_alive(self, info: dict[str, str] | None = None) -> bool:
        info = info if info is not None else self.info()
        if info.get("state") in TERMINAL or not info.get("heartbeat"):
            return False
        if time.time() - float(info["heartbeat"]) > HEARTBEAT_STALE_S:
            return False
        if info.get("producer_host") == socket.gethostname() and info.get("producer_pid"):
            return pid_alive(int(info["producer_pid"]))
        return True

    # --- jobs ----------------------------------------------------------------------------------
    def put_job(self, task_id: str, job: JobRecord) -> None:
        with self.r.pipeline() as p:
            self._flush_counts(p)
            p.hset(self.jobs_key, task_id, job.model_dump_json())
            p.execute()

    # --- scope "run": the run's own fine-tune job and the adapter of each epoch --------------------
    @property
    def learning_key(self) -> str:
        return self.key + ":learning"

    def put_run_job(self, job: JobRecord) -> None:
        with self.r.pipeline() as p:
            self._flush_counts(p)
            p.hset(self.learning_key, "job", job.model_dump_json())
            p.execute()

    def run_job(self) -> JobRecord | None:
        raw = self.r.hget(self.learning_key, "job")
        return JobRecord.model_validate_json(raw) if raw else None

    def finish_run_job(self, epoch: int, adapter: str, adapters: dict[str, str] | None = None) -> None:
        """The epoch's adapter (`adapters`: each model's) is trained: record it and drop the job, in
        one transaction."""
        with self.r.pipeline() as p:
            self._flush_counts(p)
            p.hset(self.learning_key, f"adapter:{epoch}", adapter)
            if adapters:
                p.hset(self.learning_key, f"adapters:{epoch}", json.dumps(adapters))
            p.hdel(self.learning_key, "job")
            p.execute()

    def run_adapter(self, epoch: int) -> str | None:
        return self.r.hget(self.learning_key, f"adapter:{epoch}")

    def run_adapters(self, epoch: int) -> dict[str, str]:
        """Each model's adapter of `epoch` in a run with several models ({} otherwise)."""
        raw = self.r.hget(self.learning_key, f"adapters:{epoch}")
        return json.loads(raw) if raw else {}

    def drop_job(self, task_id: str) -> None:
        self.r.hdel(self.jobs_key, task_id)

    def jobs(self) -> dict[str, JobRecord]:
        return {k: JobRecord.model_validate_json(v) for k, v in self.r.hgetall(self.jobs_key).items()}

    # --- counters ------------------------------------------------------------------------------
    def finished_tasks(self, info: dict[str, str] | None = None) -> int:
        info = info if info is not None else self.info()
        return sum(int(info.get(k, 0) or 0) for k in TASK_STATUSES)

    def count(self, stage: str, outcome: str) -> None:
        """Count a job handled; written together with the task's next job or its end."""
        self._counts.append(f"{stage}:{outcome}")

    def _flush_counts(self, p: redis.client.Pipeline) -> None:
        for key in self._counts:
            p.hincrby(self.counts_key, key, 1)
        self._counts.clear()

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self.counts_key).items()}

    def finish_task(self, task_id: str, status: str, score: float | None) -> None:
        with self.r.pipeline() as p:
            self._flush_counts(p)
            p.hincrby(self.key, status, 1)
            if score is not None:
                p.hincrbyfloat(self.key, "score_sum", score)
            p.hdel(self.jobs_key, task_id)
            p.execute()

    def snapshot(self) -> tuple[dict[str, str], dict[str, int], dict[str, JobRecord]]:
        """Fields, stage counters and jobs, read at one instant."""
        with self.r.pipeline() as p:
            p.hgetall(self.key)
            p.hgetall(self.counts_key)
            p.hgetall(self.jobs_key)
            info, counts, jobs = p.execute()
        return (info, {k: int(v) for k, v in counts.items()},
                {k: JobRecord.model_validate_json(v) for k, v in jobs.items()})

    @property
    def lost_key(self) -> str:
        return self.key + ":lost"

    def note_redelivered(self, jobs: int, lost_workers: list[str]) -> None:
        """Jobs handed out again because the worker running them died; those workers are kept by name."""
        with self.r.pipeline() as p:
            p.hincrby(self.key, "redelivered", jobs)
            if lost_workers:
                p.sadd(self.lost_key, *lost_workers)
            p.execute()

    def lost_workers(self) -> list[str]:
        return sorted(self.r.smembers(self.lost_key))

    def add_candidates(self, n: int, by_model: dict[str, int] | None = None) -> None:
        """Count recorded candidates; `by_model`: how many each model sampled (runs with several)."""
        with self.r.pipeline() as p:
            p.hincrby(self.key, "candidates", n)
            for model, k in (by_model or {}).items():
                p.hincrby(self.key, f"candidates:{model}", k)
            p.execute()

    @staticmethod
    def candidates_by_model(info: dict[str, str]) -> dict[str, int]:
        """The per-model candidate counts in a run's fields (empty for a one-model run)."""
        return {k.removeprefix("candidates:"): int(v) for k, v in info.items() if k.startswith("candidates:")}


def list_runs(r: redis.Redis, limit: int = 50) -> list[tuple[str, dict[str, str]]]:
    ids = r.zrevrange(KEY_PREFIX + "runs", 0, limit - 1)
    return [(i, RunState(r, i).info()) for i in ids]
