"""MLflow tracking of a finished run, against a local file store, read back with MLflow's own client."""

from __future__ import annotations

import sys

import pytest

from arcsynth.producer.tracking import TrackingUnavailable, ensure_available, track_run
from tests.support.crafted import write_run
from tests.unit.test_passk import A, B, C, crafted


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run", [A, B, C], crafted(), skipped=["c"], run_id="tracked", model="smollm2",
                     learn={"epochs": 1, "samples_per_epoch": 1})


def test_params_metrics_and_report_read_back_from_a_local_store(run, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run_id = track_run(run.path, tracking_uri=uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # to read the file store back
    client = MlflowClient(tracking_uri=uri)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "tracked"
    assert got.data.tags["arcsynth.run_id"] == "tracked" and got.data.tags["arcsynth.complete"] == "true"
    params = got.data.params
    assert (params["model"], params["sampling.n"], params["learn.epochs"], params["tasks"]) == ("smollm2", "2", "1", "3")
    assert params["learn.lora.target_modules"].startswith('["q_proj"')
    assert "task_ids" not in params
    metrics = got.data.metrics
    assert metrics["score"] == pytest.approx(1.5 / 3) and metrics["tasks_solved"] == 1 and metrics["samples"] == 7
    history = {m.step: m.value for m in client.get_metric_history(run_id, "epoch_candidates")}
    assert history == {0: 6, 1: 1}
    solved = {m.step: m.value for m in client.get_metric_history(run_id, "epoch_solved")}
    assert solved == {0: 1, 1: 1}
    curve = {m.step: m.value for m in client.get_metric_history(run_id, "pass_at_n")}
    assert curve == pytest.approx({1: 0.2, 2: 0.3, 4: 1 / 3, 5: 1 / 3})
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "run.json"} <= artifacts
    assert (run.path / "report.html").exists()


def test_tracking_uri_comes_from_the_environment(run, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "env-store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_id = track_run(run.path, experiment="lab")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.experiment_id == client.get_experiment_by_name("lab").experiment_id


def test_without_mlflow_the_error_says_what_to_install(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets where it is not installed
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    for call in (lambda: track_run(run.path), ensure_available):
        with pytest.raises(TrackingUnavailable) as err:
            call()
        assert str(err.value) == "experiment tracking needs MLflow: pip install 'arcsynth[track]'"
        assert isinstance(err.value, ValueError)
    assert not (run.path / "report.html").exists()  # nothing was done
