"""Operator commands: `arcsynth worker`, `arcsynth workers`, `arcsynth flower`, `arcsynth doctor`.

They need no producer code: `python -m arcsynth.workers worker execute` is the same command on a
host that only runs workers. Settings are read once here and passed to the worker's jobs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys

import click

from arcsynth.common.celery_app import make_app
from arcsynth.common.cli_base import UserError, need_broker, settings
from arcsynth.common.lifetime import children_die_with_me, die_with_parent
from arcsynth.common.supervise import Supervisor
from arcsynth.workers.doctor import doctor

POOLS = {"inference": ("threads", 4), "finetune": ("threads", 1), "execute": ("prefork", os.cpu_count() or 1)}


@click.command()
@click.argument("kind", type=click.Choice(list(POOLS)))
@click.option("--concurrency", "-c", type=click.IntRange(min=1), help="Task slots in this worker.")
@click.option("--index", type=click.IntRange(min=1), default=1, help="n in the name KIND-n@host.")
@click.option("--model", help="Model to load (inference).")
@click.option("--gpu", type=click.IntRange(min=0), help="Bind this worker to one GPU (sets CUDA_VISIBLE_DEVICES).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(kind, concurrency, index, model, gpu, loglevel):
    """Start a worker for one queue with the pool that fits its kind."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # read by CUDA itself, before it initialises
    s = need_broker(settings())
    if model:
        s = s.model_copy(update={"model": model})
    children_die_with_me()
    app = make_app(s)
    importlib.import_module(f"arcsynth.workers.{kind}").register(app, s)
    pool, default_c = POOLS[kind]
    app.worker_main([
        "worker", "-Q", kind, "-P", pool, "-c", str(concurrency or default_c),
        "-n", f"{kind}-{index}@{socket.gethostname()}", "-l", loglevel, "-E",
        "--without-gossip", "--without-mingle",
    ])


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default ARCSYNTH_FLOWER_PORT, 5555).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--persistent", type=click.Path(dir_okay=False), help="Keep Flower's state in this file.")
def flower(port, address, persistent):
    """Start Flower for this project's app, behind basic auth from settings."""
    s = need_broker(settings())
    if s.flower_basic_auth is None:
        raise UserError("setting ARCSYNTH_FLOWER_BASIC_AUTH is not set (user:password); Flower always needs auth")
    # Flower reads its password from its own environment variable, not from a command line that `ps` shows.
    os.environ["FLOWER_BASIC_AUTH"] = s.flower_basic_auth.get_secret_value()
    argv = ["flower", f"--port={port or s.flower_port}", f"--address={address}"]
    if persistent:
        argv += ["--persistent=True", f"--db={persistent}"]
    make_app(s).start(argv)


def visible_gpus() -> list[int]:
    """Indices of the GPUs `nvidia-smi -L` lists here (none without it)."""
    if shutil.which("nvidia-smi") is None:
        return []
    found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return list(range(sum(1 for ln in found.stdout.splitlines() if ln.startswith("GPU "))))


@click.command()
@click.argument("kind", type=click.Choice(["inference", "finetune"]))
@click.option("--gpus", default="all", show_default=True, help="`all`, or comma-separated GPU indices.")
@click.option("--model", help="Model to load (inference).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
              help="Give up on a worker that exits more often than this within --restart-window seconds.")
@click.option("--restart-window", type=click.FloatRange(min=1), default=60.0, show_default=True)
def workers(kind, gpus, model, max_restarts, restart_window):
    """Start one KIND worker per GPU (`KIND-<gpu+1>@host`) and supervise them until stopped.

    A worker that exits (the OOM killer, a dead vLLM engine's exit code 4) is restarted with
    backoff; its jobs come back after the broker's visibility timeout and the job guard hands them
    on. One that keeps exiting ends the command with exit code 1 and one line naming it, its exit
    code and the end of its output. SIGTERM or Ctrl-C stops every worker gracefully."""
    if gpus == "all":
        ids = visible_gpus()
    else:
        try:
            ids = [int(x) for x in gpus.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"option --gpus: expected `all` or indices like 0,1, got {gpus!r}") from None
    if not ids:
        raise UserError("option --gpus: no GPU is visible on this machine (nvidia-smi -L lists none)")
    cmd = [sys.executable, "-m", "arcsynth.workers", "worker", kind] + (["--model", model] if model else [])
    supervisor = Supervisor(max_restarts=max_restarts, window_s=restart_window)

    def starter(gpu: int):
        # Its own session: a Ctrl-C reaches only this supervisor, which stops the workers itself.
        return lambda: subprocess.Popen([*cmd, "--gpu", str(gpu), "--index", str(gpu + 1)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)

    for g in ids:
        supervisor.add(f"{kind}-{g + 1}@{socket.gethostname()}", starter(g))
    supervisor.watch()
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    try:
        failure = supervisor.wait()
    except KeyboardInterrupt:
        failure = None
    supervisor.stop()
    if failure:
        raise click.ClickException(failure)


OPERATOR_COMMANDS = (worker, workers, flower, doctor)


@click.group()
def main() -> None:
    """arcsynth operator commands for a worker host."""


for _command in OPERATOR_COMMANDS:
    main.add_command(_command)
