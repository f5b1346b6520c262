"""Supervise worker processes as systemd or Kubernetes would, for `arcsynth local` and `arcsynth workers`.

A process that exits while the supervisor is not stopping (SIGKILLed by the OOM killer, exit code
4 after its vLLM engine died, any code) is started again after a backoff that doubles with each
recent exit (`backoff_s`, 2x, ... up to `max_backoff_s`). When one exits more than `max_restarts`
times within `window_s` seconds, the supervisor gives up: `failure` holds one line naming the
process, its last exit code and the tail of its log, and `on_give_up` is called; nothing is
restarted any more, and what still runs keeps running until `stop()`.

One thread (`watch()` to `stop()`) polls, reaps, restarts and finally stops the processes: a child
started with PR_SET_PDEATHSIG dies with the thread that started it, so the thread that restarts
children must outlive them. The supervisor's notes (`say`) go to stderr by default.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from arcsynth.common.lifetime import terminate

Starter = Callable[[], "subprocess.Popen[bytes]"]
RESTART_MARK = "--- arcsynth supervisor: restart"  # written into a log before each restart


def describe_exit(code: int) -> str:
    """`exit code 3`, or `killed by SIGKILL (exit code -9)` for a process ended by a signal."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            pass
    return f"exit code {code}"


def one_line(text: str, limit: int = 400) -> str:
    """The last non-empty lines of `text` joined by ` | `, at most `limit` characters (its end)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][-4:]
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else "…" + joined[-limit:]


@dataclass
class Child:
    """One supervised process: how to start it, where its output goes, and its recent exits."""

    name: str
    start: Starter
    log: Path | None = None  # None: its stdout is a pipe, copied to ours, its tail kept in memory
    proc: subprocess.Popen[bytes] | None = None
    exits: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None
    restarts: int = 0
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))

    def log_tail(self) -> str:
        """The last lines its latest run wrote (in one line)."""
        if self.log is None:
            return one_line("".join(self.tail))
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - 4096))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return one_line(text.rpartition(RESTART_MARK)[2].partition("\n")[2] if RESTART_MARK in text else text)


class Supervisor:
    """Starts processes, restarts those that exit unexpectedly, gives up on one that keeps exiting."""

    def __init__(self, max_restarts: int = 3, window_s: float = 60.0, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 poll_s: float = 0.2, on_exit: Callable[[str, int], None] | None = None,
                 on_give_up: Callable[[str], None] | None = None, say: Callable[[str], None] | None = None) -> None:
        """`on_exit(name, code)`: called (in the supervisor's thread) when a process exited unexpectedly,
        before it is restarted; `on_give_up(line)` once, when the supervisor gives up."""
        self.max_restarts, self.window_s, self.poll_s = max_restarts, window_s, poll_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.on_exit, self.on_give_up = on_exit, on_give_up
        self.say = say or (lambda line: print(f"arcsynth: {line}", file=sys.stderr, flush=True))
        self.children: dict[str, Child] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # name -> its current process (a live view)
        self.failure: str | None = None
        self._stop = threading.Event()
        self._given_up = threading.Event()
        self._grace_s = 20.0
        self._thread: threading.Thread | None = None

    def add(self, name: str, start: Starter, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a process now (in the caller's thread) and supervise it once `watch()` runs."""
        child = self.children[name] = Child(name, start, log)
        self._launch(child)
        assert child.proc is not None
        return child.proc

    def watch(self) -> Supervisor:
        """Start the supervising thread."""
        self._thread = threading.Thread(target=self._run, name="arcsynth-supervisor", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the supervisor gives up (returns its line) or is stopped (None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set() and not self._given_up.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            self._given_up.wait(0.5)
        return self.failure

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process (a warm shutdown), SIGKILL what is left after one shared grace period."""
        self._grace_s = grace_s
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        else:
            self._stop_all()

    # --- the supervising thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll_s):
                for child in list(self.children.values()):
                    self._check(child)
        finally:
            self._stop_all()

    def _check(self, child: Child) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at and not self._given_up.is_set():
                child.restart_at = None
                child.restarts += 1
                self._launch(child)
            return
        code = child.proc.poll() if child.proc is not None else None
        if code is None or self._given_up.is_set():
            return
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self.window_s:
            child.exits.popleft()
        if self.on_exit is not None:
            try:
                self.on_exit(child.name, code)
            except Exception as exc:  # noqa: BLE001 - a failed hook must not stop supervision
                self.say(f"after {child.name} exited: {type(exc).__name__}: {exc}")
        if len(child.exits) > self.max_restarts:
            self._give_up(child, code)
            return
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (len(child.exits) - 1))
        child.restart_at = now + delay
        self.say(f"worker {child.name} exited ({describe_exit(code)}); restarting it in {delay:g} s "
                 f"({len(child.exits)} of {self.max_restarts} restarts allowed in {self.window_s:g} s)")

    def _give_up(self, child: Child, code: int) -> None:
        tail = child.log_tail()
        self.failure = (f"worker {child.name} exited {len(child.exits)} times in {self.window_s:g} s, last with "
                        f"{describe_exit(code)}; not restarting it" + (f"; its log ends: {tail}" if tail else ""))
        self._given_up.set()
        if self.on_give_up is not None:
            try:
                self.on_give_up(self.failure)
            except Exception as exc:  # noqa: BLE001
                self.say(f"on giving up: {type(exc).__name__}: {exc}")

    def _launch(self, child: Child) -> None:
        if child.log is not None and child.restarts:
            with open(child.log, "ab") as f:
                f.write(f"\n{RESTART_MARK} {child.restarts} of {child.name} ---\n".encode())
        proc = child.start()
        child.proc = self.procs[child.name] = proc
        if proc.stdout is not None:
            threading.Thread(target=_pump, args=(proc.stdout, child.tail), daemon=True, name=f"out-{child.name}").start()

    def _stop_all(self) -> None:
        terminate((c.proc for c in self.children.values() if c.proc is not None), self._grace_s)


def _pump(stream, tail: collections.deque[str]) -> None:
    """Copy a child's output to ours, line by line, keeping its last lines."""
    for raw in iter(stream.readline, b""):
        tail.append(raw.decode(errors="replace"))
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
    stream.close()
