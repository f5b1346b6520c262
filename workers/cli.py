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
import tempfile

import click

from arcsynth.common.celery_app import make_app
from arcsynth.common.cli_base import Failure, FiniteFloatRange, OneLineErrors, UserError, model_name, need_broker, settings
from arcsynth.common.jobs import inference_queue
from arcsynth.common.lifetime import children_die_with_me, die_with_parent
from arcsynth.common.settings import Settings
from arcsynth.common.supervise import Supervisor
from arcsynth.common.text import show_path
from arcsynth.workers.doctor import doctor
from arcsynth.workers.gpu_groups import cuda_visible_devices, gpu_groups, parse_gpus

POOLS = {"inference": ("threads", 4), "finetune": ("threads", 1), "execute": ("prefork", os.cpu_count() or 1)}


@click.command()
@click.argument("kind", type=click.Choice(list(POOLS)))
@click.option("--concurrency", "-c", type=click.IntRange(min=1), help="Task slots in this worker.")
@click.option("--index", type=click.IntRange(min=1), default=1, help="n in the name KIND-n@host.")
@click.option("--model", callback=model_name, help="Model to load (inference).")
@click.option("--gpu", type=click.IntRange(min=0), help="Bind this worker to one GPU (sets CUDA_VISIBLE_DEVICES).")
@click.option("--gpus", "gpu_group", metavar="0,1",
              help="Bind this worker to a group of GPUs; an inference worker's engine spans them (tensor parallelism).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(kind, concurrency, index, model, gpu, gpu_group, loglevel):
    """Start a worker for one queue with the pool that fits its kind."""
    group = bind_gpus(kind, gpu, gpu_group)
    s = need_broker(settings())
    if group is not None and kind == "inference":
        s = spanning(s, group, f"{kind}-{index}")
    if model:
        s = s.model_copy(update={"model": model})
    children_die_with_me()
    app = make_app(s)
    importlib.import_module(f"arcsynth.workers.{kind}").register(app, s)
    pool, default_c = POOLS[kind]
    app.worker_main([
        "worker", "-Q", inference_queue(s.model) if kind == "inference" else kind,
        "-P", pool, "-c", str(concurrency or default_c),
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
    # Flower compares what a browser sends ("user:password") with each comma-separated entry: one without a
    # user or a password would lock everyone out, silently. (The message never quotes it: it holds passwords.)
    if any(not user or not password for user, _, password in
           (entry.partition(":") for entry in s.flower_basic_auth.get_secret_value().split(","))):
        raise UserError("setting ARCSYNTH_FLOWER_BASIC_AUTH: want user:password, several separated by commas, "
                        "each with a user and a password")
    if persistent:  # Flower would start, then die in a traceback when it first saves its state
        try:
            with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(persistent))):
                pass
        except OSError as exc:
            raise UserError(f"option --persistent: cannot write {show_path(persistent)}: {exc.strerror}") from None
    # Flower reads its password from its own environment variable, not from a command line that `ps` shows.
    os.environ["FLOWER_BASIC_AUTH"] = s.flower_basic_auth.get_secret_value()
    argv = ["flower", f"--port={port or s.flower_port}", f"--address={address}"]
    if persistent:
        argv += ["--persistent=True", f"--db={persistent}"]
    make_app(s).start(argv)


def bind_gpus(kind: str, gpu: int | None, gpu_group: str | None) -> list[int] | None:
    """The GPUs `--gpu N` or `--gpus 0,1` give this worker (None: neither given), bound through
    CUDA_VISIBLE_DEVICES before CUDA initialises. Only an inference worker takes several."""
    if gpu is not None and gpu_group is not None:
        raise UserError("options --gpu and --gpus: give one of them")
    if gpu_group is None:
        group = None if gpu is None else [gpu]
    else:
        try:
            group = parse_gpus(gpu_group)
        except ValueError as exc:
            raise UserError(f"option --gpus: {exc}") from None
        if len(group) > 1 and kind != "inference":
            raise UserError(f"option --gpus: a {kind} worker takes one GPU; only inference spans several")
    if group is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices(group)  # read by CUDA itself, before it initialises
    return group


def spanning(s: Settings, group: list[int], who: str) -> Settings:
    """Settings whose engine spans `group`: tensor parallel size = its size. An explicit
    ARCSYNTH_TENSOR_PARALLEL_SIZE that disagrees is a user error naming --gpus. Says on stderr
    which devices worker `who` sees (Celery retitles the process, hiding /proc/PID/environ)."""
    given = "tensor_parallel_size" in s.model_fields_set
    if given and s.tensor_parallel_size != len(group):
        raise UserError(f"option --gpus: {len(group)} GPU(s) ({cuda_visible_devices(group)}) for one worker, "
                        f"but ARCSYNTH_TENSOR_PARALLEL_SIZE is {s.tensor_parallel_size}")
    setting = f"ARCSYNTH_TENSOR_PARALLEL_SIZE={s.tensor_parallel_size}" if given else "ARCSYNTH_TENSOR_PARALLEL_SIZE unset"
    click.echo(f"arcsynth worker {who}: CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}, {setting}; "
               f"its engine spans {len(group)} GPU(s)", err=True)
    return s.model_copy(update={"tensor_parallel_size": len(group)})


def visible_gpus() -> list[int]:
    """Indices of the GPUs `nvidia-smi -L` lists here (none without it)."""
    if shutil.which("nvidia-smi") is None:
        return []
    found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return list(range(sum(1 for ln in found.stdout.splitlines() if ln.startswith("GPU "))))


@click.command()
@click.argument("kind", type=click.Choice(["inference", "finetune"]))
@click.option("--gpus", default="all", show_default=True, help="`all`, or comma-separated GPU indices.")
@click.option("--tp", type=click.IntRange(min=1),
              help="GPUs per inference worker (tensor parallel size; default ARCSYNTH_TENSOR_PARALLEL_SIZE, 1).")
@click.option("--model", callback=model_name, help="Model to load (inference).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
              help="Give up on a worker that exits more often than this within --restart-window seconds.")
@click.option("--restart-window", type=FiniteFloatRange(min=1), default=60.0, show_default=True)
def workers(kind, gpus, tp, model, max_restarts, restart_window):
    """Start one KIND worker per group of --tp GPUs (`KIND-<first gpu+1>@host`) and supervise them until stopped.

    `--gpus 0,1,2,3 --tp 2` starts two inference workers, on GPUs 0,1 and 2,3 (their
    CUDA_VISIBLE_DEVICES), each with ARCSYNTH_TENSOR_PARALLEL_SIZE=2; --tp must divide the GPUs.
    A worker that exits (the OOM killer, a dead vLLM engine's exit code 4) is restarted with
    backoff; its jobs come back after the broker's visibility timeout and the job guard hands them
    on. One that keeps exiting ends the command with exit code 1 and one line naming it, its exit
    code and the end of its output. SIGTERM or Ctrl-C stops every worker gracefully. Options and
    settings are checked first (a bad one, or no broker, is one line and exit code 2 before any worker starts)."""
    if gpus == "all":
        ids = visible_gpus()
        if not ids:
            raise UserError("option --gpus: no GPU is visible on this machine (nvidia-smi -L lists none)")
    else:
        try:
            ids = parse_gpus(gpus)
        except ValueError as exc:
            raise UserError(f"option --gpus: {exc}") from None
    tp = tp or (settings().tensor_parallel_size if kind == "inference" else 1)
    if tp > 1 and kind != "inference":
        raise UserError(f"option --tp: a {kind} worker takes one GPU; only inference workers span several")
    try:
        groups = gpu_groups(ids, tp)
    except ValueError as exc:
        raise UserError(f"option --tp: {exc}") from None
    need_broker(settings())  # each worker would refuse to start without one, and be restarted in vain
    cmd = [sys.executable, "-m", "arcsynth.workers", "worker", kind] + (["--model", model] if model else [])
    supervisor = Supervisor(max_restarts=max_restarts, window_s=restart_window)

    def starter(group: list[int]):
        devices = cuda_visible_devices(group)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
        if kind == "inference":
            env["ARCSYNTH_TENSOR_PARALLEL_SIZE"] = str(len(group))
        # Its own session: a Ctrl-C reaches only this supervisor, which stops the workers itself.
        return lambda: subprocess.Popen([*cmd, "--gpus", devices, "--index", str(group[0] + 1)], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=die_with_parent)

    for group in groups:
        supervisor.add(f"{kind}-{group[0] + 1}@{socket.gethostname()}", starter(group))
    supervisor.watch()
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    try:
        failure = supervisor.wait()
    except KeyboardInterrupt:
        failure = None
    supervisor.stop()
    if failure:
        raise Failure(failure)


OPERATOR_COMMANDS = (worker, workers, flower, doctor)


@click.group(cls=OneLineErrors)
def main() -> None:
    """arcsynth operator commands for a worker host."""


for _command in OPERATOR_COMMANDS:
    main.add_command(_command)
