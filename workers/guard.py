"""Job guard: one delivery of a job runs at a time, a finished job never runs again, and a job
that keeps killing its worker is failed instead of being handed out forever.

Redis hands an unacknowledged job out again once the broker's visibility timeout passes: wanted
when the worker died, unwanted when the job merely runs long, and a job that kills its worker
would come back forever. So every delivery first takes the job's lease in Redis (renewed while it
runs, so it lapses within `lease_s` of a worker's death): a second delivery waits while a live
worker holds the lease, and skips the job once the holder marked it done. Each delivery that
starts the job counts an attempt; past `max_attempts` the job fails with the reason. A job whose
run stopped (`attempts.cancel_jobs`) is skipped by every delivery, whenever a worker takes it; one
that was running then drops its payload and stored result when it ends.

Keys: `arcsynth:lease:<job>` (holder, `done` or `cancelled`), `arcsynth:job:<job>` (attempts, workers).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import redis
from celery import Task
from celery.exceptions import Ignore

from arcsynth.common import payloads
from arcsynth.common.attempts import CANCELLED, DONE, KEEP_S, job_attempts, lease_key, record_attempt
from arcsynth.common.lifetime import pid_alive
from arcsynth.common.redis_client import redis_client

log = logging.getLogger(__name__)

# Renew or finish the lease only while this delivery still holds it.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_FINISH = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) "
           "end return 0")
_TAKE_OVER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class PoisonJob(Exception):
    """The job was started `max_attempts` times and its worker died every time."""


@dataclass
class JobGuard:
    r: redis.Redis
    job_id: str
    worker: str
    lease_s: float = 30.0
    max_attempts: int = 3
    poll_s: float = 1.0
    holder: str = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _renewer: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.holder = json.dumps({"worker": self.worker, "host": socket.gethostname(), "pid": os.getpid(),
                                  "t": time.time()})

    @property
    def lease_key(self) -> str:
        return lease_key(self.job_id)

    def enter(self) -> bool:
        """Take the lease (waiting while another live delivery runs the job) and count the attempt.

        False: the job already finished, or its run stopped, so this delivery must not run it.
        Raises PoisonJob when the job has used up its attempts."""
        waited = False
        while not self.r.set(self.lease_key, self.holder, nx=True, px=int(self.lease_s * 1000)):
            current = self.r.get(self.lease_key)
            if current == DONE:
                log.warning("job %s already finished; this delivery skips it", self.job_id)
                return False
            if current == CANCELLED:
                log.warning("job %s was given up by its run (it stopped); this delivery skips it", self.job_id)
                return False
            if current is not None and _holder_dead(current):
                self.r.eval(_TAKE_OVER, 1, self.lease_key, current)
                continue
            if not waited and current is not None:
                log.warning("job %s is running on %s; this delivery waits for it", self.job_id,
                            json.loads(current).get("worker", "?"))
                waited = True
            time.sleep(self.poll_s)  # the lease lapses or turns to `done`: polling Redis
        attempts, workers = job_attempts(self.r, [self.job_id])[self.job_id]
        workers.append(self.worker)
        record_attempt(self.r, self.job_id, workers)
        if attempts >= self.max_attempts:
            self.finish()
            raise PoisonJob(f"its worker died during each of its {attempts} attempts "
                            f"({', '.join(workers[:-1])}); not trying again")
        if attempts:
            log.warning("job %s: attempt %d (earlier ones ended with their worker: %s)", self.job_id, attempts + 1,
                        ", ".join(workers[:-1]))
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.job_id[:8]}", daemon=True)
        self._renewer.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.r.eval(_RENEW, 1, self.lease_key, self.holder, int(self.lease_s * 1000))
            except redis.RedisError as exc:  # an outage: the next renewal tries again
                log.warning("job %s: cannot renew its lease: %s", self.job_id, exc)

    def finish(self) -> bool:
        """Mark the job done (its result is stored): later deliveries of it skip it. False when this
        delivery no longer held the lease (the run gave the job up, or another delivery took over)."""
        self._stop.set()
        return bool(self.r.eval(_FINISH, 1, self.lease_key, self.holder, DONE, KEEP_S))

    def cancelled(self) -> bool:
        """Whether the job's run gave it up (`attempts.cancel_jobs`)."""
        return self.r.get(self.lease_key) == CANCELLED


def _holder_dead(holder: str) -> bool:
    """True when the holder is a process on this host that no longer exists (no need to wait out its lease)."""
    try:
        h = json.loads(holder)
    except ValueError:
        return False
    if h.get("host") != socket.gethostname() or not h.get("pid"):
        return False
    pid = int(h["pid"])
    return pid != os.getpid() and not pid_alive(pid)


# --- the Celery side -------------------------------------------------------------------------------

_guards: dict[str, JobGuard] = {}
_client: tuple[int, redis.Redis] | None = None


def _redis(url: str) -> redis.Redis:
    """One client per process (prefork children must not share their parent's sockets)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis_client(url))
    return _client[1]


class GuardedTask(Task):
    """Base of the three job kinds: each delivery runs under the job's lease (see the module docstring).
    The lease and attempt limits come from the app's configuration (`make_app`)."""

    def __call__(self, *args, **kwargs):
        job_id = self.request.id
        if self.request.called_directly or not job_id:
            return super().__call__(*args, **kwargs)
        conf = self.app.conf
        guard = JobGuard(_redis(conf.broker_url), job_id, self.request.hostname or socket.gethostname(),
                         conf.arcsynth_job_lease_s, conf.arcsynth_max_job_attempts)
        if not guard.enter():
            raise Ignore()  # finished by an earlier delivery: its result is stored, nothing to redo
        _guards[job_id] = guard
        return super().__call__(*args, **kwargs)

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:
        """Called once the result is stored: from now on the job counts as done. If its run gave the
        job up meanwhile, no producer will collect what it made: its payload and result are dropped."""
        guard = _guards.pop(task_id, None)
        if guard is not None and not guard.finish() and guard.cancelled():
            ref = retval.get("candidates_ref") if isinstance(retval, dict) else None
            if isinstance(ref, str) and ref:
                payloads.drop(ref)
            self.backend.forget(task_id)
            log.warning("job %s ended after its run gave it up: its payload and result are dropped", task_id)
