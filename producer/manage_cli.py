"""Commands on runs that exist: `runs`, `status`, `wait`, `resume`, `cancel`, `results`, `report`.

RUN is a run directory or a run id known to Redis. Settings are read once per process (see `cli`).
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click
import redis
from celery import Celery

from arcsynth.common.celery_app import make_app
from arcsynth.common.cli_base import Failure, FiniteFloatRange, UserError, need_broker, settings
from arcsynth.common.records import TaskRecord, TaskStatus
from arcsynth.common.redis_client import redis_client
from arcsynth.common.settings import Settings
from arcsynth.common.text import show_path
from arcsynth.producer.run_files import RunDirError
from arcsynth.producer.run_options import notable_settings
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunBusy, RunState, list_runs


def connect(s: Settings) -> tuple[Celery, redis.Redis]:
    """The app and Redis of the configured broker; a clear error when it cannot be reached."""
    need_broker(s)
    try:
        redis_client(s.broker(), outage_s=0).ping()  # fail fast here; later calls ride out outages
    except redis.RedisError as exc:
        raise UserError(f"setting ARCSYNTH_BROKER_URL: cannot reach Redis ({type(exc).__name__})") from None
    return make_app(s), redis_client(s.broker())


def resolve(run: str, need_dir: bool = False) -> tuple[RunDir, RunState | None, Celery | None]:
    """RUN is a run directory or a run id known to Redis; its live state when a broker is configured.
    A path that is there but is not a run directory, or no path and no broker to look the id up in,
    is a user error saying which. `need_dir`: the command reads or writes the run directory here, so a
    run id whose directory is not here (moved, removed, on another host) is a user error too."""
    s = settings()
    rundir = RunDir(Path(run))
    problem = rundir.problem()
    try:
        there = os.path.lexists(run)
    except ValueError:  # a NUL in the name
        there = False
    if problem and there:
        raise UserError(problem if os.path.isdir(run) else f"{show_path(run)}: not a run directory (give its folder)")
    if problem and s.broker_url is None:
        raise UserError(f"run {show_path(run)}: no such run directory (a run id is looked up in Redis: "
                        "set ARCSYNTH_BROKER_URL)")
    if not problem:
        try:
            run_id = rundir.config().run_id
        except RunDirError as exc:
            raise UserError(str(exc)) from None
        if s.broker_url is None:
            return rundir, None, None
        app, r = connect(s)
        return rundir, RunState(r, run_id), app
    app, r = connect(s)
    state = RunState(r, run)
    if not state.exists():
        raise UserError(f"run {run}: no such run directory, and no run with that id in Redis")
    rundir = RunDir(Path(state.get("run_dir") or ""))
    problem = rundir.problem() if need_dir else None
    if problem:
        raise UserError(f"run {run}: its run directory is not here: {problem}")
    return rundir, state, app


@contextmanager
def _driving(state: RunState) -> Iterator[None]:
    """`state.driving()`, its `RunBusy` a failure said in one line."""
    try:
        with state.driving():
            yield
    except RunBusy as exc:
        raise Failure(str(exc)) from None


def need_state(run: str, state: RunState | None) -> RunState:
    if state is None:
        raise UserError(f"run {run}: needs ARCSYNTH_BROKER_URL (its live state is in Redis)")
    return state


def start_producer(state: RunState, rundir: RunDir) -> int:
    """Start the run's producer detached from this terminal; it logs to the run directory, which
    becomes the run's in Redis (`RUN` given as a path may name it after it moved)."""
    with open(rundir.path / "producer.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "arcsynth.producer", "produce", str(rundir.path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state.set(producer_pid=proc.pid, producer_host=socket.gethostname(), heartbeat=time.time(),
              run_dir=str(rundir.path.resolve()))  # where it is now: a run resumed after its folder moved
    return proc.pid


def _needed_queues(rundir: RunDir) -> dict[str, str]:
    """The queues the run needs a consumer on (`liveness.needed_queues`); none when its run.json
    cannot be read here (the run directory may live on another host)."""
    from arcsynth.producer.liveness import needed_queues

    try:
        return needed_queues(rundir.config())
    except RunDirError:
        return {}


def say_ends(records: Mapping[str, TaskRecord]) -> None:
    """On stderr, one line per task that did not end `done`: `<status> <task>: <reason>` (skipped,
    failed or cancelled), so that a run whose every task failed does not end on a plain `done`."""
    for task_id, record in records.items():
        if record.status != TaskStatus.DONE:
            click.echo(f"{record.status.value} {task_id}: {record.reason}", err=True)


def follow_to_end(state: RunState, rundir: RunDir, app: Celery | None = None) -> None:
    """Follow the run with a bar until it ends; with `app`, say on stderr when a queue it needs has had
    no live consumer for `ARCSYNTH_NO_WORKER_WARN_S` (see `liveness`), and when it has one again."""
    from arcsynth.producer.follow import follow
    from arcsynth.producer.liveness import ConsumerWatch

    try:
        if app is None:
            info = follow(state)
        else:
            with ConsumerWatch(app, _needed_queues(rundir), settings().no_worker_warn_s):
                info = follow(state)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the run goes on. `arcsynth wait {state.run_id}` to follow again", err=True)
        sys.exit(130)
    final = info.get("state")
    if final not in ("done", "cancelled"):
        raise Failure(
            f"run {state.run_id}: producer stopped while {final}; see {rundir.path / 'producer.log'} "
            f"and continue with `arcsynth resume {state.run_id}`")
    try:
        say_ends(rundir.records())
    except (RunDirError, OSError) as exc:  # the run has ended all the same: say why its tasks cannot be listed
        click.echo(f"warning: cannot list its tasks: {exc}", err=True)
    if info.get("solutions_known") == "1" and info.get("score"):
        click.echo(f"score: {float(info['score']):.3f} over {info.get('total')} tasks")
    click.echo(f"{final}: submission {rundir.path / 'submission.json'}")


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def runs(limit):
    """List recent runs with their state and progress."""
    _, r = connect(settings())
    click.echo(f"{'run':<24}{'state':<11}{'created':<20}{'finished':>12}{'score':>8}  settings  (directory)")
    for run_id, info in list_runs(r, limit):
        state = RunState(r, run_id)
        status = info.get("state", "?")
        if status == "running" and not state.producer_alive(info):
            status = "stalled"
        created = datetime.datetime.fromtimestamp(float(info.get("created", 0))).strftime("%Y-%m-%d %H:%M:%S")
        score = f"{float(info['score']):.3f}" if info.get("score") else "-"
        finished = f"{state.finished_tasks(info)}/{info.get('total', '?')}"
        rundir = RunDir(Path(info.get("run_dir", "")))
        try:
            notes = notable_settings(rundir.config())
        except RunDirError:
            notes = "(run.json unreadable)"
        click.echo(f"{run_id:<24}{status:<11}{created:<20}{finished:>12}{score:>8}  {notes}  ({rundir.path})")


@click.command()
@click.argument("run")
def status(run):
    """Per stage: tasks pending, running, done and failed; the score so far when solutions are known;
    each queue the unfinished run needs that no worker consumes."""
    from arcsynth.producer.follow import status_text

    rundir, state, app = resolve(run)
    state = need_state(run, state)
    click.echo(status_text(state, app, _needed_queues(rundir)))


@click.command()
@click.argument("run")
def wait(run):
    """Follow a run with a live progress bar until it ends; say when a queue it needs has no worker."""
    rundir, state, app = resolve(run)
    follow_to_end(need_state(run, state), rundir, app)


def _unfinished(run: str, verb: str, need_dir: bool = True) -> tuple[RunDir, RunState, Celery, dict[str, str]]:
    """The run's directory, state, app and fields; a clear error if it has already ended (or, with
    `need_dir`, if its run directory is not here)."""
    rundir, state, app = resolve(run, need_dir)
    state = need_state(run, state)
    info = state.info()
    if info.get("state") in ("done", "cancelled"):
        raise UserError(f"run {state.run_id} is {info['state']}; nothing to {verb}")
    return rundir, state, app, info  # type: ignore[return-value]


@click.command()
@click.argument("run")
@click.option("--wait", "wait_", is_flag=True, help="Follow the run until it ends.")
def resume(run, wait_):
    """Start a new producer for a run whose producer died; finished work is not repeated."""
    rundir, state, app, _ = _unfinished(run, "resume")
    with _driving(state):  # checked and started in one turn: two resumes at once start one producer
        info = state.info()
        if info.get("state") in ("done", "cancelled"):
            raise UserError(f"run {state.run_id} is {info['state']}; nothing to resume")
        if state.producer_alive(info):
            raise UserError(f"run {state.run_id} still has a live producer (pid {info.get('producer_pid')} "
                            f"on {info.get('producer_host')})")
        if info.get("state") != "cancelling":  # a cancel asked for stays asked for: the producer finishes it
            state.set(state="resuming")
        pid = start_producer(state, rundir)
    click.echo(f"resumed {state.run_id}: producer pid {pid}")
    if wait_:
        follow_to_end(state, rundir, app)


@click.command()
@click.argument("run")
@click.option("--timeout", type=FiniteFloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait for the producer.")
def cancel(run, timeout):
    """Revoke the run's unstarted jobs, mark unfinished tasks cancelled, write the results."""
    from arcsynth.producer.run import Producer

    rundir, state, app, info = _unfinished(run, "cancel", need_dir=False)
    alive = state.producer_alive(info)
    problem = None if alive else rundir.problem()  # no producer to record the cancellation, nor a directory here
    if problem:
        raise UserError(f"run {run}: its run directory is not here: {problem}")
    state.set(state="cancelling")
    deadline = time.monotonic() + timeout
    while True:
        while alive and state.state() == "cancelling" and time.monotonic() < deadline and state.producer_alive():
            time.sleep(0.2)  # the live producer records the cancellation itself
        with _driving(state):  # one command at a time becomes the run's producer to finish the cancellation
            if state.state() == "cancelled":
                break
            alive = state.producer_alive()  # maybe started meanwhile by a `resume`: it cancels
            if not alive or time.monotonic() >= deadline:
                state.set(producer_pid=os.getpid(), producer_host=socket.gethostname(), heartbeat=time.time(),
                          run_dir=str(rundir.path.resolve()))
                Producer(app, rundir, state).cancel()
                break
    click.echo(f"cancelled {state.run_id}: submission {rundir.path / 'submission.json'}")


@click.command()
@click.argument("run")
def results(run):
    """Write submission.json (and score.json) from whatever has finished; unfinished tasks get placeholders.
    A line of the run directory that does not validate is refused first (one line naming it), nothing written."""
    from arcsynth.producer.summary import RunReadError, check_run

    rundir, _, _ = resolve(run, need_dir=True)
    try:
        rundir.check_files()  # not repair(): a torn last line may be a live producer's write in progress
        check_run(rundir)
        submission, scores = rundir.write_results()
    except (RunReadError, RunDirError) as exc:
        raise UserError(str(exc)) from None
    if scores is not None:
        click.echo(f"score: {scores.score:.3f} over {scores.total} tasks ({scores.finished} finished)")
    click.echo(f"submission: {submission}")


@click.command()
@click.argument("run")
def report(run):
    """Write report.html into the run directory: grids, attempts, programs, per-epoch counts. A line of
    the run directory that does not validate is refused (one line naming it), nothing written."""
    from arcsynth.producer.report import write_report
    from arcsynth.producer.summary import RunReadError

    rundir, _, _ = resolve(run, need_dir=True)
    try:
        click.echo(write_report(rundir))
    except (RunReadError, RunDirError) as exc:
        raise UserError(str(exc)) from None


RUN_COMMANDS = (runs, status, wait, resume, cancel, results, report)
