"""A whole arcsynth cluster on one machine: private Redis plus one worker of each kind.

Used by `arcsynth local` and shared by the test session. Everything it starts is stopped on
exit, Ctrl-C or failure; worker logs go to its log folder so a failed start can say why.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arcsynth.common.lifetime import die_with_parent
from arcsynth.common.settings import Settings
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
    log = open(log_path, "ab")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)


def wait_ready(app, procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path],
               timeout: float) -> None:
    """Block until every worker answers a ping; fail early with its log if one exits."""
    deadline = time.monotonic() + timeout
    waiting = set(procs)
    while waiting:
        for name in list(waiting):
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


class LocalCluster:
    """A private Redis and one worker of each kind in `kinds`, for `arcsynth local`, tests and benchmarks.

    `settings`: the caller's (its broker is replaced by the private Redis's); `env`: extra settings
    for the workers, which read theirs from their environment."""

    def __init__(self, model: str, kinds: tuple[str, ...] = KINDS, env: dict[str, str] | None = None,
                 log_dir: Path | None = None, ready_timeout: float = 300.0,
                 worker_args: dict[str, list[str]] | None = None, redis: RedisServer | None = None,
                 settings: Settings | None = None) -> None:
        self.settings = settings
        self.worker_args = worker_args or {}
        self.model = model
        self.kinds = kinds
        self.extra_env = env or {}
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="arcsynth-cluster-"))
        self.ready_timeout = ready_timeout
        self.redis = redis or RedisServer()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}

    def start(self) -> LocalCluster:
        from pydantic import SecretStr

        from arcsynth.common.celery_app import make_app

        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.redis.start()
            self.env = {**os.environ, "ARCSYNTH_BROKER_URL": self.redis.url,
                        "ARCSYNTH_RESULT_BACKEND": self.redis.url, "ARCSYNTH_MODEL": self.model,
                        **self.extra_env}
            logs = {}
            for kind in self.kinds:
                name = worker_name(kind)
                logs[name] = self.log_dir / f"{kind}.log"
                self.procs[name] = start_worker(kind, self.env, logs[name], self.worker_args.get(kind))
            url = SecretStr(self.redis.url)
            self.app = make_app((self.settings or Settings()).model_copy(update={"broker_url": url, "result_backend": url}))
            wait_ready(self.app, self.procs, logs, self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every worker (a warm shutdown), then SIGKILL what is left after one shared grace period."""
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in running:
            proc.wait(timeout=10)
        self.redis.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
