"""The job guard on a real Redis: one delivery at a time, a finished job never runs again, and a
job whose worker keeps dying fails with the reason after a bounded number of attempts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from arcsynth.common.attempts import KEEP_S, cancel_jobs, job_attempts
from arcsynth.common.redis_client import redis_client
from arcsynth.producer.redis_server import RedisServer
from arcsynth.workers.guard import JobGuard, PoisonJob


@pytest.fixture(scope="module")
def r():
    with RedisServer() as server:
        client = redis_client(server.url, outage_s=0)
        yield client
        client.close()


def _dead_holder(r, job_id: str) -> None:
    """Leave the lease held by a process that has died (as a SIGKILLed worker leaves it)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(child.stdout)
    guard = JobGuard(r, job_id, "lost-worker@host", lease_s=60)
    guard.enter()
    guard._stop.set()  # its renewer stops as the process would
    holder = json.loads(guard.holder) | {"pid": pid}
    r.set(guard.lease_key, json.dumps(holder), px=60_000)


def test_a_second_delivery_waits_for_the_first_and_then_skips_the_finished_job(r):
    first = JobGuard(r, "job-a", "execute-1@h", lease_s=5, poll_s=0.05)
    assert first.enter()
    verdict: list[bool] = []
    second = JobGuard(r, "job-a", "execute-2@h", lease_s=5, poll_s=0.05)
    waiter = threading.Thread(target=lambda: verdict.append(second.enter()))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not verdict  # waits while the first holds the lease
    first.finish()
    waiter.join(timeout=10)
    assert verdict == [False]  # the job is done: the second delivery must not run it
    assert job_attempts(r, ["job-a"])["job-a"] == (1, ["execute-1@h"])


def test_a_lapsed_lease_lets_the_next_delivery_run_and_counts_the_attempt(r):
    first = JobGuard(r, "job-b", "execute-1@elsewhere", lease_s=3, poll_s=0.05)
    assert first.enter()
    first._stop.set()  # its worker died: nobody renews the lease
    second = JobGuard(r, "job-b", "execute-2@h", lease_s=3, poll_s=0.05)
    assert second.enter()  # after the lease lapsed (about 3 s)
    second.finish()
    assert job_attempts(r, ["job-b"])["job-b"] == (2, ["execute-1@elsewhere", "execute-2@h"])


def test_a_dead_holder_on_this_host_is_not_waited_for(r):
    _dead_holder(r, "job-c")
    guard = JobGuard(r, "job-c", "execute-2@h", lease_s=60, poll_s=0.05)
    done = threading.Event()
    threading.Thread(target=lambda: (guard.enter(), done.set()), daemon=True).start()
    assert done.wait(5)  # far less than the 60 s lease
    guard.finish()


def test_a_job_whose_worker_died_every_time_fails_with_the_reason(r):
    for _ in range(3):
        _dead_holder(r, "job-d")
    with pytest.raises(PoisonJob, match=r"died during each of its 3 attempts \(lost-worker@host, "):
        JobGuard(r, "job-d", "execute-9@h", max_attempts=3, poll_s=0.05).enter()
    # ... and it counts as finished: a later delivery skips it rather than trying again.
    assert JobGuard(r, "job-d", "execute-8@h", poll_s=0.05).enter() is False


def test_the_lease_is_renewed_while_the_job_runs(r):
    guard = JobGuard(r, "job-e", "execute-1@h", lease_s=3, poll_s=0.05)
    assert guard.enter()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert r.get(guard.lease_key) == guard.holder  # never lapses while renewed
        time.sleep(0.2)  # sampling the lease over 5 s (longer than its 3 s life)
    guard.finish()
    assert r.get(guard.lease_key) == "done"


def test_a_job_its_run_gave_up_is_skipped_by_every_later_delivery_and_a_running_one_learns_it(r):
    """`cancel_jobs` (the producer, when a run stops) marks the lease `cancelled`: a delivery that was
    waiting on the running one, and one that comes later (a worker started after the run), skip the
    job without counting an attempt; the running delivery no longer holds the lease when it ends,
    and sees why (its worker then drops its payload and result)."""
    running = JobGuard(r, "job-given-up", "execute-1@h", lease_s=5, poll_s=0.05)
    assert running.enter()
    verdict: list[bool] = []
    waiting = JobGuard(r, "job-given-up", "execute-2@h", lease_s=5, poll_s=0.05)
    waiter = threading.Thread(target=lambda: verdict.append(waiting.enter()))
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # waits on the running delivery
    cancel_jobs(r, ["job-given-up", "job-never-started"])
    waiter.join(timeout=10)
    assert verdict == [False]
    assert not running.finish() and running.cancelled()
    assert r.get(running.lease_key) == "cancelled"  # the end of the running delivery does not undo it
    later = JobGuard(r, "job-never-started", "execute-3@h", lease_s=5, poll_s=0.05)
    assert not later.enter()
    assert job_attempts(r, ["job-given-up", "job-never-started"]) == {"job-given-up": (1, ["execute-1@h"]),
                                                                      "job-never-started": (0, [])}
    assert 0 < r.ttl(later.lease_key) <= KEEP_S


def test_a_finished_job_is_not_given_up_by_its_own_delivery(r):
    """`finish` holds only for the delivery holding the lease; a job done before the run stopped stays done."""
    guard = JobGuard(r, "job-done-first", "execute-1@h", lease_s=5, poll_s=0.05)
    assert guard.enter()
    assert guard.finish() and not guard.cancelled()
