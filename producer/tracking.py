"""Experiment tracking: a finished run directory logged to MLflow, so runs can be found and compared there.

`track_run(run_dir)` logs one MLflow run (named after the arcsynth run id) holding:
- params: the run's settings, flattened (`sampling.n`, `learn.epochs`, `learn.lora.rank`, ...;
  task ids become `tasks`, their count; run.json itself is an artifact);
- metrics: `score`, `tasks_solved` (when the test outputs are known), `tasks`, `samples`,
  `samples_per_task`, `wall_s`, `sample_s`, `execute_s`, `finetune_s` (when known); per epoch,
  with the epoch as step: `epoch_candidates`, `epoch_valid`, `epoch_train_correct`,
  `epoch_solved`; and the curves over all epochs, with n as step: `pass_at_n`, `score_at_n`;
- artifacts: `report.html` (written first when missing or older than the run's records),
  `run.json` and `score.json` when present;
- tags: `arcsynth.run_id`, `arcsynth.dataset`, `arcsynth.model`, `arcsynth.run_dir`.

The tracking URI is the argument, else `MLFLOW_TRACKING_URI`, else a local `mlruns/` folder in
the working directory. MLflow 3 refuses its file store unless `MLFLOW_ALLOW_FILE_STORE` is set;
for a folder URI this module sets it while it logs. MLflow is optional: `pip install
'arcsynth[track]'`; without it, `TrackingUnavailable` says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arcsynth.producer.rundir import RunDir
from arcsynth.producer.summary import RunReadError, RunSummary, flat_settings, open_run, summarise

INSTALL_HINT = "pip install 'arcsynth[track]'"
DEFAULT_EXPERIMENT = "arcsynth"


class TrackingUnavailable(RunReadError):
    """MLflow is not installed."""


def ensure_available() -> None:
    """Raise TrackingUnavailable unless MLflow can be imported: check this before a run starts (`--track mlflow`)."""
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError:
        raise TrackingUnavailable(f"experiment tracking needs MLflow: {INSTALL_HINT}") from None


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else `mlruns/` in the working directory (as a file URI)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()


@contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    local = uri.startswith("file:") or "://" not in uri
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    if local and before is None:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if local and before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _fresh_report(rundir: RunDir) -> Path:
    from arcsynth.producer.report import write_report

    report = rundir.path / "report.html"
    newest = max((f.stat().st_mtime for f in (rundir.tasks_file, rundir.candidates_file) if f.exists()), default=0.0)
    if not report.exists() or report.stat().st_mtime < newest:
        return write_report(rundir)
    return report


def run_metrics(s: RunSummary) -> list[tuple[str, float, int]]:
    """(key, value, step) of every metric `track_run` logs for a summary."""
    out: list[tuple[str, float, int]] = [("tasks", s.tasks, 0), ("samples", s.samples, 0),
                                         ("samples_per_task", s.samples_per_task, 0),
                                         ("sample_s", s.times.sample_s, 0), ("execute_s", s.times.execute_s, 0)]
    if s.score is not None:
        out += [("score", s.score, 0), ("tasks_solved", float(s.solved or 0), 0)]
    if s.wall_s is not None:
        out.append(("wall_s", s.wall_s, 0))
    if s.times.finetune_s is not None:
        out.append(("finetune_s", s.times.finetune_s, 0))
    for epoch, t in s.per_epoch.items():
        out += [("epoch_candidates", t.candidates, epoch), ("epoch_valid", t.valid, epoch),
                ("epoch_train_correct", t.train_correct, epoch), ("epoch_solved", t.solved, epoch)]
    for n, p, sc in zip(s.overall.n, s.overall.pass_at_n, s.overall.score_at_n):
        out += [("pass_at_n", p, n), ("score_at_n", sc, n)]
    return out


def track_run(run: Path | str | RunDir, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Log a run directory to MLflow (see the module docstring); return the MLflow run id.

    Raises TrackingUnavailable without MLflow, RunReadError for an unreadable run directory."""
    ensure_available()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    rundir = run if isinstance(run, RunDir) else open_run(run)
    summary = summarise(rundir)
    report = _fresh_report(rundir)
    config = summary.config
    uri = tracking_uri or default_tracking_uri()
    with _file_store_allowed(uri):
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        tags = {"arcsynth.run_id": config.run_id, "arcsynth.dataset": config.dataset, "arcsynth.model": config.model,
                "arcsynth.run_dir": str(rundir.path.resolve())}
        mlrun = client.create_run(experiment_id, run_name=config.run_id, tags=tags)
        run_id = mlrun.info.run_id
        params = [Param(k, v[:6000]) for k, v in flat_settings(config).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v, step in run_metrics(summary)]
        for i in range(0, max(len(params), len(metrics)), 100):
            client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100],
                             tags=[RunTag("arcsynth.complete", str(summary.statuses.get("unfinished", 0) == 0).lower())]
                             if i == 0 else [])
        for artifact in (report, rundir.path / "run.json", rundir.path / "score.json"):
            if artifact.exists():
                client.log_artifact(run_id, str(artifact))
        client.set_terminated(run_id, "FINISHED")
    return run_id
