"""A whole arcsynth cluster on one machine: private Redis plus one worker of each kind.

Used by `arcsynth local` and shared by the test session. Everything it starts is stopped on
exit, Ctrl-C or failure; worker logs go to its log folder so a failed start can say why. A log
folder the cluster made itself (under the temporary directory) is removed when it stops after a
success and kept, its path said on stderr, after a failure.

With `supervise=True` (`arcsynth local`) a worker that exits unexpectedly is restarted with
backoff (`common/supervise.py`) and the jobs it had taken are put back on its queue at once (each
queue has one worker here, so every unacknowledged job of that queue was the dead worker's; the
job guard lets the new delivery take over the dead holder's lease). A worker that keeps exiting
makes the cluster give up: `failure` holds one line naming it, its exit code and its log's tail,
and the callback given to `when_given_up` runs (`local` cancels its run with it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from celery import Celery

from arcsynth.common.jobs import inference_queue
from arcsynth.common.lifetime import die_with_parent, terminate
from arcsynth.common.settings import Settings
from arcsynth.common.supervise import Supervisor
from arcsynth.producer.redis_server import RedisServer

KINDS = ("execute", "inference", "finetune")


class ClusterError(RuntimeError):
    pass


def worker_name(kind: str, index: int = 1) -> str:
    return f"{kind}-{index}@{socket.gethostname()}"


def start_worker(kind: str, env: dict[str, str], log_path: Path, extra: list[str] | None = None,
                 index: int = 1, launcher: list[str] | None = None) -> subprocess.Popen[bytes]:
    """`launcher`: a command prefix for the worker, e.g. `ip netns exec NS` to put it on another network."""
    cmd = [*(launcher or []), sys.executable, "-m", "arcsynth.workers", "worker", kind, "--index", str(index), *(extra or [])]
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        # Its own process group: a Ctrl-C at the terminal reaches the command, which stops the run and
        # then its workers, not the workers mid-run.
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
                                process_group=0)


def wait_ready(app: Celery, procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path],
               timeout: float, supervisor: Supervisor | None = None) -> None:
    """Block until every worker answers a ping. Unsupervised, fail early with its log if one exits;
    supervised, exits are restarted and only the supervisor giving up fails the wait."""
    deadline = time.monotonic() + timeout
    waiting = set(procs)
    while waiting:
        if supervisor is not None and supervisor.failure:
            raise ClusterError(supervisor.failure)
        for name in list(waiting) if supervisor is None else []:
            if procs[name].poll() is not None:
                tail = logs[name].read_text(errors="replace")[-2000:]
                raise ClusterError(f"worker {name} exited with {procs[name].returncode}:\n{tail}")
        replies = app.control.ping(destination=list(waiting), timeout=1.0)
        for reply in replies:
            waiting -= set(reply)
        if waiting and time.monotonic() > deadline:
            raise ClusterError(f"workers not ready after {timeout:.0f} s: {sorted(waiting)}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def requeue_unacked(app: Celery, queue: str, prefix: bool = False) -> int:
    """Put every job taken from `queue` (with `prefix`, also from `queue.<anything>`, e.g. every
    model's `inference.<model>`) and not yet acknowledged back at the head of its queue.

    Only where one worker consumes `queue` (a local cluster): then those jobs were the dead worker's.
    Acks are late, so a job is unacknowledged until it ended; Redis itself would hand it out again
    only after the visibility timeout (hours by default)."""
    from kombu.utils.json import loads

    moved = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        for tag, raw in client.hgetall(channel.unacked_key).items():
            _, exchange, routing_key = loads(raw)
            if any(q == queue or (prefix and q.startswith(queue + ".")) for q in (routing_key, exchange) if q):
                channel.qos.restore_by_tag(tag, client, leftmost=True)
                moved += 1
    return moved


class LocalCluster:
    """A private Redis and one worker of each kind in `kinds`, for `arcsynth local`, tests and benchmarks.

    `models`: the models an inference worker is started for, one each (`inference-1`, `inference-2`,
    ... in that order, each consuming its model's queue); default `[model]`. `settings`: the
    caller's (its broker is replaced by the private Redis's); `env`: extra settings
    for the workers, which read theirs from their environment; `supervise`: restart workers that
    exit (see the module docstring), giving up after `max_restarts` exits of one within `window_s`."""

    def __init__(self, model: str, kinds: tuple[str, ...] = KINDS, env: dict[str, str] | None = None,
                 models: list[str] | None = None,
                 log_dir: Path | None = None, ready_timeout: float = 300.0,
                 worker_args: dict[str, list[str]] | None = None, redis: RedisServer | None = None,
                 settings: Settings | None = None, supervise: bool = False, max_restarts: int = 3,
                 window_s: float = 60.0, backoff_s: float = 1.0) -> None:
        self.settings = settings
        self.worker_args = worker_args or {}
        self.model = model
        self.models = models or [model]
        self.kinds = kinds
        self.queues: dict[str, str] = {}  # worker name -> the queue it consumes
        self.extra_env = env or {}
        self.owns_log_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="arcsynth-cluster-"))
        self.ready_timeout = ready_timeout
        self.redis = redis or RedisServer()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        self.supervisor = (Supervisor(max_restarts=max_restarts, window_s=window_s, backoff_s=backoff_s,
                                      on_exit=self._worker_exited, on_give_up=self._given_up) if supervise else None)
        self.keep_logs = False  # set by a caller whose run failed: the log folder is kept
        self._give_up_callbacks: list[Callable[[str], None]] = []

    @property
    def failure(self) -> str | None:
        """One line naming the worker the supervisor gave up on, or None."""
        return self.supervisor.failure if self.supervisor else None

    def when_given_up(self, callback: Callable[[str], None]) -> None:
        """Call `callback(line)` when the supervisor gives up (at once if it already has)."""
        self._give_up_callbacks.append(callback)
        if self.failure:
            callback(self.failure)

    def _given_up(self, line: str) -> None:
        for callback in list(self._give_up_callbacks):
            callback(line)

    def _worker_exited(self, name: str, code: int) -> None:
        moved = requeue_unacked(self.app, self.queues[name])
        if moved:
            print(f"arcsynth: {moved} job(s) of {name} put back on its queue", file=sys.stderr, flush=True)

    def start(self) -> LocalCluster:
        from pydantic import SecretStr

        from arcsynth.common.celery_app import make_app

        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.redis.start()
            self.env = {**os.environ, "ARCSYNTH_BROKER_URL": self.redis.url,
                        "ARCSYNTH_RESULT_BACKEND": self.redis.url, "ARCSYNTH_MODEL": self.model,
                        **self.extra_env}
            url = SecretStr(self.redis.url)
            self.app = make_app((self.settings or Settings()).model_copy(update={"broker_url": url, "result_backend": url}))
            logs = {}
            for kind, index, args, queue in self._workers():
                name = worker_name(kind, index)
                log = logs[name] = self.log_dir / (f"{kind}.log" if index == 1 else f"{kind}-{index}.log")
                self.queues[name] = queue
                if self.supervisor is None:
                    self.procs[name] = start_worker(kind, self.env, log, args, index)
                else:
                    self.supervisor.add(name, lambda k=kind, lg=log, a=args, i=index: start_worker(k, self.env, lg, a, i),
                                        log)
            if self.supervisor is not None:
                self.procs = self.supervisor.procs
                self.supervisor.watch()
            wait_ready(self.app, self.procs, logs, self.ready_timeout, self.supervisor)
        except BaseException:
            self.stop(failed=True)
            raise
        return self

    def _workers(self) -> list[tuple[str, int, list[str] | None, str]]:
        """(kind, index, extra arguments, queue) of every worker to start."""
        out: list[tuple[str, int, list[str] | None, str]] = []
        for kind in self.kinds:
            args = self.worker_args.get(kind)
            if kind != "inference":
                out.append((kind, 1, args, kind))
                continue
            for index, model in enumerate(self.models, 1):
                extra = [*(args or []), "--model", model] if model != self.model else args
                out.append((kind, index, extra, inference_queue(model)))
        return out

    def stop(self, grace_s: float = 20.0, failed: bool = False) -> None:
        """SIGTERM every worker (a warm shutdown), then SIGKILL what is left after one shared grace period.

        A log folder this cluster made is removed unless the run `failed`, the supervisor gave up or
        `keep_logs` is set; then it stays and its path is said on stderr."""
        try:  # a signal mid-way (a second Ctrl-C) still stops Redis and says where the logs are
            if self.supervisor is not None:
                self.supervisor.stop(grace_s)
            terminate(self.procs.values(), grace_s)
        finally:
            try:
                self.redis.stop()
            finally:
                self._tidy_logs(failed)

    def _tidy_logs(self, failed: bool) -> None:
        if self.owns_log_dir:
            if failed or self.failure or self.keep_logs:
                print(f"arcsynth: worker logs kept in {self.log_dir}", file=sys.stderr, flush=True)
            else:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.stop(failed=exc_type is not None)
