"""What `arcsynth runs` shows of each run's settings: a lab notebook line."""

from arcsynth.common.models import LearnConfig, RunConfig, SamplingConfig
from arcsynth.producer.run_options import notable_settings


def config(**update) -> RunConfig:
    return RunConfig(run_id="r", dataset="d", task_ids=["t"], model="smollm2", sampling=SamplingConfig()).model_copy(
        update=update)


def test_defaults_show_only_model_samples_epochs_and_scope():
    assert notable_settings(config()) == "model=smollm2 samples=8 epochs=0 scope=task"


def test_settings_that_differ_from_their_defaults_are_named():
    line = notable_settings(config(sampling=SamplingConfig(n=64, min_p=0.05), vote="weighted",
                                   learn=LearnConfig(epochs=2, scope="run", select="diverse", refine_rounds=3,
                                                     refine_strategy="rex", base_model="smollm2")))
    assert line.startswith("model=smollm2 samples=64 epochs=2 scope=run ")
    for part in ("min_p=0.05", "select=diverse", "refine_rounds=3", "refine_strategy=rex", "vote=weighted"):
        assert part in line.split(), line
    assert "base_model" not in line and "task_ids" not in line


def test_a_local_start_adapter_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    """run.json names it, and `report` or `resume` read it from other working directories; a URL stays as given."""
    from arcsynth.producer.run_options import _adapter_path

    monkeypatch.chdir(tmp_path)
    assert _adapter_path("artifacts/adapters/ab12") == str(tmp_path / "artifacts" / "adapters" / "ab12")
    assert _adapter_path("s3://bucket/adapters/ab12") == "s3://bucket/adapters/ab12"
    assert _adapter_path("") == ""
