"""`arcsynth local` checks before starting anything that what the run needs can be had, and
refuses in one line naming what is missing and what to do (exit 2): no Redis, no worker, no
log folder is ever started for a run that could not have run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import assert_user_error

HUB_ID = "arcsynth-tests/no-such-model"
TASK = {"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}


def local(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(TASK))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "TMPDIR": str(tmp_path / "tmp"),
            "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts")}
    return subprocess.run([sys.executable, "-m", "arcsynth.producer", "local", str(path), "--out", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=120, env={**base, **env})


def assert_nothing_started(tmp_path) -> None:
    assert list((tmp_path / "tmp").iterdir()) == []  # no arcsynth-cluster-* or arcsynth-redis-* folder
    assert not (tmp_path / "run").exists() and not (tmp_path / "artifacts").exists()


def test_a_hub_model_not_in_the_cache_with_hf_hub_offline(tmp_path):
    """The default model, no `--model`, nothing cached: refused at once instead of after a minute of retries."""
    started = time.monotonic()
    r = local(tmp_path, HF_HUB_OFFLINE="1")
    assert_user_error(r, ["model 'Qwen/Qwen2.5-Coder-0.5B-Instruct' is not in the local Hugging Face cache",
                          "HF_HUB_OFFLINE is set", "--model smollm2", "a local model folder"])
    assert time.monotonic() - started < 60
    assert_nothing_started(tmp_path)


def test_a_hub_model_the_hub_does_not_give(tmp_path):
    """Without the hub (as here) or with it (no such model), one line, within the hub check's 5 s."""
    r = local(tmp_path, "--model", HUB_ID)
    assert_user_error(r, [f"model {HUB_ID!r}", "--model smollm2"])
    assert "the hub cannot be reached" in r.stderr or "the hub has no such model" in r.stderr
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize("case, fragments", [
    ("model_path", ["model ./no-such-model: no such folder", "--model smollm2"]),
    ("model_folder_without_config", ["a path without config.json"]),
    ("alias_not_prepared", ["model alias 'smollm2' is not prepared", "arcsynth models prepare smollm2"]),
    ("adapter", ["adapter ", "gone-adapter: no such folder"]),
    ("adapter_without_config", ["adapter ", "no adapter_config.json"]),
    ("dsl", ["DSL module ", "common.py (ARCSYNTH_EXEC_DSL): no such file"]),
    ("dsl_a_folder", ["DSL module ", "empty-folder (ARCSYNTH_EXEC_DSL): not a regular file"]),  # was "no such file"
    ("dsl_a_fifo", ["DSL module ", "fifo.py (ARCSYNTH_EXEC_DSL): not a regular file"]),
    ("dsl_that_does_not_import", ["the execute worker would refuse to start: DSL module ", "no_such_dependency"]),
    # Review: was "unavailable here" (found by probing the sandbox), as if the host lacked it; `submit` and
    # `worker execute` took it (the worker then exited 3 at start).
    ("required_layer_unknown", ["setting ARCSYNTH_EXEC_REQUIRE: no isolation layer named 'no_such_layer' (layers: "
                                "network_namespace, mount_namespace"]),
    ("artifact_root", ["artifact root ", "(ARCSYNTH_ARTIFACT_ROOT) is not writable here: Not a directory"]),
    ("replay_missing", ["replay file ", "gone.jsonl: cannot read: No such file"]),
    ("replay_bad_line", ["replay file ", "programs.jsonl: line 2: needs a task_id"]),
    ("replay_unset", ["ARCSYNTH_BACKEND=replay needs ARCSYNTH_REPLAY_FILE"]),
    ("learning_on_replay_needs_the_base_model", ["model ./base: no such folder"]),
])
def test_what_is_missing_is_named_before_anything_starts(tmp_path, case, fragments):
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "a-file").write_text("")
    (tmp_path / "programs.jsonl").write_text('{"task_id": "t", "text": "x"}\n{"text": "y"}\n')
    (tmp_path / "broken.py").write_text("import no_such_dependency\n")
    os.mkfifo(tmp_path / "fifo.py")
    (tmp_path / "good.jsonl").write_text('{"task_id": "t", "text": "x"}\n')
    replay = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(tmp_path / "good.jsonl")}
    args, env = {
        "model_path": (["--model", "./no-such-model"], {}),
        "model_folder_without_config": (["--model", str(tmp_path / "empty-folder")], {}),
        "alias_not_prepared": (["--model", "smollm2"], {"ARCSYNTH_MODEL_CACHE": str(tmp_path / "models")}),
        "adapter": (["--adapter", str(tmp_path / "gone-adapter")], replay),
        "adapter_without_config": (["--adapter", str(tmp_path / "empty-folder")], replay),
        "dsl": ([], {**replay, "ARCSYNTH_EXEC_DSL": str(tmp_path / "dsl" / "common.py")}),
        "dsl_that_does_not_import": ([], {**replay, "ARCSYNTH_EXEC_DSL": str(tmp_path / "broken.py")}),
        "dsl_a_folder": ([], {**replay, "ARCSYNTH_EXEC_DSL": str(tmp_path / "empty-folder")}),
        "dsl_a_fifo": ([], {**replay, "ARCSYNTH_EXEC_DSL": str(tmp_path / "fifo.py")}),
        "required_layer_unknown": ([], {**replay, "ARCSYNTH_EXEC_REQUIRE": "no_such_layer"}),
        "artifact_root": ([], {**replay, "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "a-file" / "artifacts")}),
        "replay_missing": ([], {**replay, "ARCSYNTH_REPLAY_FILE": str(tmp_path / "gone.jsonl")}),
        "replay_bad_line": ([], {**replay, "ARCSYNTH_REPLAY_FILE": str(tmp_path / "programs.jsonl")}),
        "replay_unset": ([], {"ARCSYNTH_BACKEND": "replay"}),
        "learning_on_replay_needs_the_base_model": (["--model", "./base", "--epochs", "1"], replay),
    }[case]
    r = local(tmp_path, *args, **env)
    assert_user_error(r, fragments)
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "run").exists()


def test_a_dataset_without_tasks_starts_nothing(tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "x_challenges.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "local", str(tmp_path / "x_challenges.json"), "--model",
                        "smollm2"], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")})
    assert_user_error(r, ["x_challenges.json: no tasks in this file"])
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(("prompt", "dsl", "warned"), [
    ("barc", "", True),
    ("barc", "/opt/dsl/helpers.py", True),  # a DSL, but not BARC's `common`
    ("barc", "/opt/dsl/helpers.py, /opt/BARC/common.py", False),
    ("arcsynth", "", False),
    ("base", "", False),
])
def test_a_barc_prompt_without_barcs_common_module_is_warned_about(prompt, dsl, warned):
    """BARC's programs start with `from common import *`: with no `common.py` offered, every such
    program fails to load, so `local` says so before it starts (a warning: a run may not need it)."""
    from arcsynth.common.settings import Settings
    from arcsynth.workers.preflight import barc_dsl_warning

    warning = barc_dsl_warning(Settings(_env_file=None, exec_dsl=dsl), prompt)
    assert (warning is not None) == warned
    if warned:
        assert "ARCSYNTH_EXEC_DSL=/path/to/BARC/common.py" in warning
