"""The producer's own health in the run's Redis state: a heartbeat with its memory, and memory at
25/50/75/100 % of tasks finished (which shows whether it stays flat as runs grow)."""

from __future__ import annotations

import resource
import time

from arcsynth.producer.runstate import RunState


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Telemetry:
    def __init__(self, state: RunState, total: int) -> None:
        self.state, self.total = state, total
        self._checkpoints = [25, 50, 75, 100]
        self._last_beat = 0.0

    def beat(self) -> None:
        """At most once a second: the heartbeat that says this producer is alive."""
        now = time.monotonic()
        if now - self._last_beat >= 1.0:
            self._last_beat = now
            self.state.heartbeat(rss_mb=round(rss_mb(), 1), rss_peak_mb=peak_rss_mb())

    def progress(self, finished: int) -> None:
        pct = 100 * finished // max(1, self.total)
        while self._checkpoints and pct >= self._checkpoints[0]:
            self.state.set(**{f"rss_mb_at_{self._checkpoints.pop(0)}": round(rss_mb(), 1)})
