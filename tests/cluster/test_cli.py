"""The `arcsynth` CLI as a user meets it: one-line errors with exit code 2, nothing enqueued."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

ARCSYNTH = [sys.executable, "-m", "arcsynth.producer"]


def cli(*args, env=None, timeout=120):
    return subprocess.run([*ARCSYNTH, *args], capture_output=True, text=True, env=env, timeout=timeout)


BAD = {
    "bad_json.json": "{\"train\": [",
    "ragged.json": {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]]}]},
    "colour.json": {"train": [{"input": [[10]], "output": [[1]]}], "test": [{"input": [[1]]}]},
    "wide.json": {"train": [{"input": [[1] * 31], "output": [[1]]}], "test": [{"input": [[1]]}]},
    "no_train.json": {"train": [], "test": [{"input": [[1]]}]},
}
EXPECTED = {
    "bad_json.json": "invalid JSON",
    "ragged.json": "task ragged: field train[0].input: grid is ragged",
    "colour.json": "task colour: field train[0].input: colour 10",
    "wide.json": "task wide: field train[0].input: grid must have 1..30 columns",
    "no_train.json": "task no_train: field train:",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_validate_reports_one_line_and_exit_2(tmp_path, name):
    path = tmp_path / name
    data = BAD[name]
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    r = cli("tasks", "validate", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and EXPECTED[name] in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_validate_ok():
    r = cli("tasks", "validate", "arc-agi-1/evaluation")
    assert r.returncode == 0 and "ok: 400 tasks" in r.stdout


def test_bad_setting_is_a_user_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}))
    r = cli("submit", str(path), env={"ARCSYNTH_EXEC_TIMEOUT_S": "-3", "PATH": "/usr/bin"})
    assert r.returncode == 2 and "ARCSYNTH_EXEC_TIMEOUT_S" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.cluster
def test_submit_with_a_malformed_file_enqueues_nothing(cluster, tmp_path):
    good = {"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}
    (tmp_path / "a_good.json").write_text(json.dumps(good))
    (tmp_path / "b_bad.json").write_text(json.dumps(BAD["colour.json"]))
    r = cli("submit", str(tmp_path), "--out", str(tmp_path / "run"), env=cluster.env)
    assert r.returncode == 2 and "b_bad.json: task b_bad" in r.stderr
    client = redis.Redis.from_url(cluster.redis.url)
    assert [client.llen(q) for q in ("inference", "execute", "finetune")] == [0, 0, 0]
    assert not (tmp_path / "run").exists()


def test_bad_sampling_option_is_a_user_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}))
    r = cli("submit", str(path), "--top-p", "1.5", env={"ARCSYNTH_BROKER_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin"})
    assert r.returncode == 2 and "option --top-p" in r.stderr and "Traceback" not in r.stderr
