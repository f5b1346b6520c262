"""Does every queue a run needs have a live consumer? So that a run never waits silently on nobody.

A run needs a consumer on each of its models' inference queues, on `execute`, and on `finetune`
when it learns (`needed_queues`, from `jobs.run_queues`). Who consumes what is asked of the
workers themselves with one Celery broadcast (`active_queues`): a worker that answers within the
timeout is live, with the queues it names. The decisions are pure and take the answers as data:

- `missing_queues`: the needed queues no answering worker consumes (`arcsynth status`, `submit`);
- `OutageTracker`: over repeated answers, which queue has had no consumer for `warn_after_s`
  (said once per outage) and which has one again (said once); and which worker that consumed a
  needed queue has not answered for `warn_after_s` (hung, stopped or gone: answers alone cannot
  tell these apart), and when it answers again.

The broadcast (`consumers_of`) and the thread that repeats it while a run is followed
(`ConsumerWatch`: `arcsynth wait`, `submit --wait`, `resume --wait`, `local`) are the edges.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from celery import Celery
from tqdm import tqdm

from arcsynth.common.jobs import run_queues
from arcsynth.common.models import RunConfig

# Worker name -> the queues it consumes, as one broadcast's answers give them.
Consumers = Mapping[str, Collection[str]]
Say = Callable[[str], None]


def needed_queues(config: RunConfig) -> dict[str, str]:
    """Every queue `config`'s run needs a live consumer on, with what serves it (`jobs.run_queues`)."""
    return run_queues(config.all_models, config.learn.epochs > 0)


def parse_active_queues(replies: Mapping[str, Iterable[Mapping[str, object]]] | None) -> dict[str, set[str]]:
    """`inspect().active_queues()`'s answer (worker -> its queues' declarations, or None when
    nobody answered) as worker -> the names of the queues it consumes."""
    return {worker: {str(q["name"]) for q in queues if q.get("name")} for worker, queues in (replies or {}).items()}


def missing_queues(needed: Mapping[str, str], consumers: Consumers) -> dict[str, str]:
    """The entries of `needed` (queue -> what serves it) whose queue no worker in `consumers` consumes, in order."""
    consumed = {q for queues in consumers.values() for q in queues}
    return {q: what for q, what in needed.items() if q not in consumed}


def no_consumer_line(queue: str, what: str) -> str:
    """`no worker consumes inference.smollm2 (inference worker for model smollm2)`."""
    return f"no worker consumes {queue} ({what})"


def consumers_of(app: Celery, timeout: float = 1.0) -> dict[str, set[str]] | None:
    """Ask every worker on `app`'s broker what it consumes; wait `timeout` seconds for the answers.

    Worker -> its queues (empty when none answered); None when the broker could not be asked
    (then nothing can be concluded about the workers)."""
    try:
        replies = app.control.inspect(timeout=timeout).active_queues()
    except Exception:  # the broker is down or restarting: no answer is not "no worker"
        return None
    return parse_active_queues(replies)


def missing_consumers(app: Celery, needed: Mapping[str, str], timeout: float = 1.0) -> dict[str, str]:
    """The entries of `needed` (queue -> what serves it) that no worker answering within `timeout` consumes.

    Empty when the broker cannot be asked (nothing is known to be missing then); asks nothing when
    `needed` is empty."""
    if not needed:
        return {}
    consumers = consumers_of(app, timeout)
    return {} if consumers is None else missing_queues(needed, consumers)


@dataclass
class _Outage:
    since: float  # when it began (the first answer without it, or the tracker's start)
    said: bool = False


@dataclass
class OutageTracker:
    """Per needed queue (queue -> what serves it), over time: has it a consumer? Pure: time is given.

    `observe(consumers, now)` takes one broadcast's answers and returns the lines to say:
    - a queue without a consumer for `warn_after_s` is said once per outage (counted from the
      tracker's `start` while the queue was never consumed), naming the workers that consumed it
      and went silent; when it has a consumer again, that is said once, naming them;
    - a worker that answered before, naming a needed queue, and has not answered for
      `warn_after_s` is said once per silence (hung, stopped or gone: answers alone cannot tell
      which), and again when it answers. This sees a hung worker even where another worker still
      consumes its queue.
    `consumers=None` (the broker could not be asked) changes nothing and says nothing."""

    needed: Mapping[str, str]
    warn_after_s: float
    start: float
    queues: dict[str, _Outage] = field(default_factory=dict)  # needed queue -> its outage now
    workers: dict[str, _Outage] = field(default_factory=dict)  # known worker -> its silence now
    known: dict[str, set[str]] = field(default_factory=dict)  # worker -> the needed queues it last named
    seen: set[str] = field(default_factory=set)  # needed queues consumed at some point

    def observe(self, consumers: Consumers | None, now: float) -> list[str]:
        if consumers is None:
            return []
        lines = self._observe_workers(consumers, now)
        consumed = {q for queues in consumers.values() for q in queues}
        for queue, what in self.needed.items():
            outage = self.queues.get(queue)
            if queue in consumed:
                self.seen.add(queue)
                if outage is not None:
                    del self.queues[queue]
                    if outage.said:
                        by = ", ".join(sorted(w for w, qs in consumers.items() if queue in qs))
                        lines.append(f"{queue} ({what}) has a consumer again: {by}")
                continue
            if outage is None:
                outage = self.queues[queue] = _Outage(since=now if queue in self.seen else self.start)
            if not outage.said and now - outage.since >= self.warn_after_s:
                outage.said = True
                gone = sorted(w for w in self.workers if queue in self.known[w])
                note = f"; it was consumed by {', '.join(gone)}, which stopped answering" if gone else ""
                lines.append(f"{no_consumer_line(queue, what)} for {now - outage.since:.0f} s{note}; "
                             "the run waits for one")
        return lines

    def _observe_workers(self, consumers: Consumers, now: float) -> list[str]:
        lines = []
        for worker, queues in consumers.items():
            silence = self.workers.pop(worker, None)
            if silence is not None and silence.said:
                lines.append(f"worker {worker} answers again")
            mine = {q for q in queues if q in self.needed}
            if mine:
                self.known[worker] = mine
        for worker in sorted(set(self.known) - set(consumers)):
            silence = self.workers.setdefault(worker, _Outage(since=now))
            if not silence.said and now - silence.since >= self.warn_after_s:
                silence.said = True
                lines.append(f"worker {worker} (consumes {', '.join(sorted(self.known[worker]))}) has not answered "
                             f"for {now - silence.since:.0f} s: hung, stopped or gone")
        return lines


def stderr_line(line: str) -> None:
    """`arcsynth: LINE` on stderr, above any progress bar on it."""
    tqdm.write(f"arcsynth: {line}", file=sys.stderr)


class ConsumerWatch:
    """While open, a daemon thread asks the workers what they consume every `interval_s` seconds
    and says (through `say`, default stderr) what an `OutageTracker` over `needed` decides.

    It only speaks; it never stops or fails the run (the run's own `--timeout` still applies)."""

    def __init__(self, app: Celery, needed: Mapping[str, str], warn_after_s: float, say: Say = stderr_line,
                 interval_s: float | None = None, reply_timeout_s: float = 2.0) -> None:
        self.app = app
        self.tracker = OutageTracker(dict(needed), warn_after_s, start=time.monotonic())
        self.say = say
        self.interval_s = interval_s if interval_s is not None else max(0.5, min(10.0, warn_after_s / 4))
        self.reply_timeout_s = reply_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="arcsynth-consumer-watch", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            consumers = consumers_of(self.app, self.reply_timeout_s)
            if self._stop.is_set():
                return
            for line in self.tracker.observe(consumers, time.monotonic()):
                self.say(line)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ConsumerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.reply_timeout_s + 5)
