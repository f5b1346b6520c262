"""Job messages the broker lost: found by the producer and sent again under the same ids.

kombu's Redis transport takes a message off its queue (BRPOP) and records it as unacknowledged
only afterwards, in a second round trip: a worker killed in between, or a Redis restart in between
(the append-only file is synced once a second), loses the message (celery/celery#7950,
celery/kombu#305). The producer marks a job sent once and would wait on it forever; so every
`interval_s` it looks for the message of each stage of each job in flight.

Where a stage's message can be, in the order a message moves, which is the order they are read
in (a message moving forward during a check is still seen):
1. `queued`: in its queue, the Redis list named after it (`execute`, `finetune`,
   `inference.<model>`), or one of kombu's priority sub-queues (`<queue>\\x06\\x16<priority>`);
   a message is JSON with `headers.id` = the job id;
2. `unacked`: in the transport's `unacked` hash (values `[message, exchange, routing_key]`): a
   worker took it; acks are late, so it stays there until the job's result is stored;
3. `leased`: the job's lease `arcsynth:lease:<id>` is held, or says `done` or `cancelled` (workers/guard.py);
4. `result`: its result is stored in a final state (SUCCESS, FAILURE, REVOKED). STARTED
   (`task_track_started`) alone proves nothing: it stays when the worker died mid-job.
A message restored from `unacked` to its queue moves backwards (one transaction) and can be
missed once, so a stage is lost only when it was found nowhere on two checks in a row; the
check that confirms comes `confirm_s` after the first (sooner than `interval_s`).

Which stages must have a message (`expected`): those of jobs marked sent (a job not yet marked
sent is sent again by the producer anyway). A sample, until its result is final. An execute only
once its sample succeeded: before, it travels inside the sample's message (the chain), and a
worker publishes it before it stores the sample's result. None once the sample failed (Celery
fails the chained execute with it). A fine-tune (a task's, or the run's with `--learn-scope run`),
until its result is final. The samples' states are read before anything else, so an execute
expected was published before its queue is read. One Redis holds queues, leases and results
(the usual set-up), and its append-only file keeps a prefix of the writes, so what survives a
restart is consistent: a surviving result implies the execute published before it survived.

What is sent again (`resend`), under the same ids:
- a lost sample: the lane's whole chain (`send_search` with the lane's ids and messages, which
  `policy.requests` gives again, deterministically);
- a lost execute whose sample succeeded: the execute alone (`send_execute`) with the stored
  `SampleResult` and the lane's `ExecuteRequest`; re-sending the chain would not do, since the
  guard skips the finished sample and a skipped task passes nothing on;
- a lost fine-tune of a task: the fine-tune (`send_finetune`) with the same request;
- a lost fine-tune of the run (scope "run"): the producer marks the run's job not sent, and
  `RunLearning.poll` sends it again under its ids, as after a restart (every lane of it: a lane
  not lost gets a duplicate, which the guard makes wait or skip).
A false alarm is harmless: the job guard lets one delivery of a job id run at a time, and a
delivery that finds the job done skips it (`Ignore`: no result stored, nothing passed on). So a
second sample delivery neither samples twice nor sends a second execute (the one that ran sent
it); a second execute or fine-tune delivery waits while the first runs, then skips.

`expected` and `LostJobWatch` are the decision, pure (tests/unit/test_lost_jobs.py); `look`
(reads Redis and the result backend), `resend` and `check` are the edges the producer calls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import redis
from celery import Celery
from celery.exceptions import BackendError
from celery.result import AsyncResult
from kombu.transport.redis import PRIORITY_STEPS, Channel

from arcsynth.common.attempts import lease_key
from arcsynth.common.jobs import SampleResult, Stage, inference_queue, send_execute, send_finetune, send_search
from arcsynth.common.records import JobRecord
from arcsynth.producer.policy import Messages
from arcsynth.producer.runstate import RunState

log = logging.getLogger(__name__)

RUN_JOB = "(run)"  # the owner of the run's own fine-tune (scope "run"); other owners are task ids
CONFIRM_S = 5.0  # a stage found nowhere is looked for again this soon (or after `interval_s`, if sooner)
READY = frozenset({"SUCCESS", "FAILURE", "REVOKED"})  # celery.states.READY_STATES: a final result

Place = Literal["queued", "unacked", "leased", "result"]
PLACES: tuple[Place, ...] = ("queued", "unacked", "leased", "result")  # in the order a message moves
Found = Mapping[str, Collection[Place]]  # job id -> where its message was seen (empty: nowhere)


@dataclass(frozen=True)
class Expected:
    """A stage of a job in flight whose message must exist somewhere now."""

    owner: str  # the task id, or RUN_JOB
    lane: int  # the index of its lane in `JobRecord.lanes()`
    stage: Stage
    job_id: str
    queue: str  # where it is sent


# --- the decision ------------------------------------------------------------------------------------
def expected(owner: str, job: JobRecord, states: Mapping[str, str], model: str) -> list[Expected]:
    """The stages of `owner`'s `job` that must have a message now (see the module docstring).

    `states`: the Celery state of each lane's sample, read before the places are (absent:
    PENDING); `model`: the run's model, which a lane without one samples from."""
    if not job.sent or not job.lane_stages:
        return []
    out = []
    for lane, (lane_model, ids) in enumerate(job.lanes()):
        if job.lane_stages == ("finetune",):
            out.append(Expected(owner, lane, "finetune", ids[0], "finetune"))
            continue
        sample = states.get(ids[0], "PENDING")
        if sample == "SUCCESS":
            out.append(Expected(owner, lane, "execute", ids[1], "execute"))
        elif sample not in READY:  # failed or revoked: the execute failed with it, the lane is over
            out.append(Expected(owner, lane, "sample", ids[0], inference_queue(lane_model or model)))
    return out


@dataclass
class LostJobWatch:
    """When to look next and which stages were found nowhere last time. Pure: time is given.

    `observe` takes one check's findings and returns the stages lost: expected now, and found
    nowhere now and on the previous check. A stage returned is forgotten, so once re-sent it must
    again be missed twice to be re-sent again. The next check is due `interval_s` later, or
    `min(interval_s, confirm_s)` later while a stage waits to be confirmed lost."""

    interval_s: float
    confirm_s: float = CONFIRM_S
    next_at: float = 0.0  # the first check is due at once
    missing: frozenset[str] = frozenset()  # job ids found nowhere on the last check

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def observe(self, wanted: Sequence[Expected], found: Found, now: float) -> list[Expected]:
        nowhere = {e.job_id for e in wanted if not found.get(e.job_id)}
        lost = [e for e in wanted if e.job_id in nowhere and e.job_id in self.missing]
        self.missing = frozenset(nowhere - {e.job_id for e in lost})
        self.postpone(now)
        return lost

    def postpone(self, now: float) -> None:
        """Schedule the next check (also after a check that could not look)."""
        self.next_at = now + (min(self.interval_s, self.confirm_s) if self.missing else self.interval_s)


def describe(lost: Expected) -> str:
    """The producer's line for a re-sent stage."""
    who = "the run's fine-tune" if lost.owner == RUN_JOB else f"task {lost.owner}"
    after = " (its sample had finished)" if lost.stage == "execute" else ""
    return (f"{who}: the {lost.stage} job {lost.job_id}{after} was found nowhere (queue {lost.queue}, unacked, "
            "lease, result) on two checks: the broker lost its message; sent again under the same id")


# --- the edges ---------------------------------------------------------------------------------------
def sample_states(app: Celery, jobs: Iterable[JobRecord]) -> dict[str, str]:
    """The Celery state of each lane's sample in the sent searches and refinements of `jobs`."""
    return {ids[0]: AsyncResult(ids[0], app=app).state for job in jobs if job.sent and job.lane_stages == ("sample", "execute")
            for _, ids in job.lanes()}


def queue_keys(app: Celery, queue: str) -> list[str]:
    """The Redis lists kombu keeps `queue`'s messages in: the queue, then its priority sub-queues."""
    options = app.conf.broker_transport_options or {}
    prefix = options.get("global_keyprefix", "")
    steps = options.get("priority_steps", PRIORITY_STEPS)
    return [prefix + (queue if not p else f"{queue}{Channel.sep}{p}") for p in steps]


def message_id(raw: str | bytes | dict) -> str | None:
    """The job id in a kombu message (`headers.id`), or None."""
    try:
        message = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        return message["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def look(r: redis.Redis, app: Celery, wanted: Sequence[Expected]) -> dict[str, set[Place]]:
    """Where each wanted stage's message is, the places read in `PLACES` order: each queue's lists
    once (one pipeline), the `unacked` hash once, then the leases and the results of the stages not
    found yet. `r`: the broker's Redis."""
    found: dict[str, set[Place]] = {e.job_id: set() for e in wanted}
    options = app.conf.broker_transport_options or {}
    keys = [k for q in sorted({e.queue for e in wanted}) for k in queue_keys(app, q)]
    with r.pipeline(transaction=False) as p:
        for key in keys:
            p.lrange(key, 0, -1)
        lists = p.execute()
    for raw in (m for messages in lists for m in messages):
        if (i := message_id(raw)) in found:
            found[i].add("queued")
    for raw in r.hvals(options.get("global_keyprefix", "") + options.get("unacked_key", "unacked")):
        try:
            message = json.loads(raw)[0]
        except (ValueError, IndexError, TypeError):
            continue
        if (i := message_id(message)) in found:
            found[i].add("unacked")
    rest = [i for i, places in found.items() if not places]
    for i, lease in zip(rest, r.mget([lease_key(i) for i in rest]) if rest else []):
        if lease is not None:
            found[i].add("leased")
    for i in rest:
        if not found[i] and AsyncResult(i, app=app).state in READY:
            found[i].add("result")
    return found


def check(app: Celery, r: redis.Redis, watch: LostJobWatch, jobs: Mapping[str, JobRecord], model: str,
          now: float) -> list[Expected]:
    """One check over `jobs` (owner -> its job in flight): the stages lost (see `LostJobWatch`).

    Reads the samples' states, then the places; a check that cannot read (Redis restarting)
    decides nothing and is tried again soon. `model`: the run's model."""
    try:
        states = sample_states(app, jobs.values())
        wanted = [e for owner, job in jobs.items() for e in expected(owner, job, states, model)]
        found = look(r, app, wanted) if wanted else {}
    except (redis.RedisError, OSError, BackendError) as exc:
        log.warning("cannot look for lost job messages now: %s", exc)
        watch.postpone(now)
        return []
    return watch.observe(wanted, found, now)


def note_resent(state: RunState) -> None:
    """Count one re-sent message in the run's fields (`resent`, shown by `arcsynth status`)."""
    state.r.hincrby(state.key, "resent", 1)


def resend(app: Celery, lost: Expected, job: JobRecord, messages: Messages) -> None:
    """Send `lost`'s message again under its id (see the module docstring). `job`: its owner's job;
    `messages`: that lane's messages (`policy.requests(...)[lost.lane]`, or the run's fine-tune request)."""
    _, ids = job.lanes()[lost.lane]
    if lost.stage == "finetune":
        assert not isinstance(messages, tuple), messages
        send_finetune(app, ids[0], messages)
        return
    assert isinstance(messages, tuple), messages
    if lost.stage == "sample":
        send_search(app, ids, *messages)
    else:
        sampled = SampleResult.model_validate(AsyncResult(ids[0], app=app).result)
        send_execute(app, sampled, messages[1], ids[1])
