"""A corpus of malformed inputs: each gets one clear line naming the file (and task and field
where there is one), exit code 2, and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

OK_PAIR = {"input": [[1]], "output": [[1]]}


def task(**over):
    return {"train": [OK_PAIR], "test": [{"input": [[1]]}], **over}


# name -> (file name, content (str/bytes/obj), expected fragments)
CASES = {
    "invalid_json": ("a.json", '{"train": [', ["a.json", "invalid JSON at line 1"]),
    "not_an_object": ("a.json", [1, 2], ["a.json", "task a", "expected a JSON object"]),
    "train_not_a_list": ("a.json", task(train={"x": 1}), ["task a", "field train", "valid list"]),
    "grid_not_a_list": ("a.json", task(train=[{"input": 5, "output": [[1]]}]), ["field train[0].input", "valid list"]),
    "ragged_rows": ("a.json", task(train=[{"input": [[1, 2], [3]], "output": [[1]]}]), ["field train[0].input", "ragged"]),
    "empty_grid": ("a.json", task(train=[{"input": [], "output": [[1]]}]), ["field train[0].input", "1..30 rows, got 0"]),
    "empty_row": ("a.json", task(train=[{"input": [[]], "output": [[1]]}]), ["field train[0].input", "1..30 columns, got 0"]),
    "wide_31": ("a.json", task(train=[{"input": [[1] * 31], "output": [[1]]}]), ["1..30 columns, got 31"]),
    "tall_31": ("a.json", task(test=[{"input": [[1]] * 31}]), ["field test[0].input", "1..30 rows, got 31"]),
    "colour_10": ("a.json", task(train=[{"input": [[10]], "output": [[1]]}]), ["colour 10"]),
    "colour_minus_1": ("a.json", task(train=[{"input": [[1]], "output": [[-1]]}]), ["field train[0].output", "colour -1"]),
    "colour_string": ("a.json", task(train=[{"input": [["1"]], "output": [[1]]}]), ["train[0].input[0][0]", "valid integer"]),
    "colour_float": ("a.json", task(train=[{"input": [[1.5]], "output": [[1]]}]), ["train[0].input[0][0]", "valid integer"]),
    "colour_bool": ("a.json", task(train=[{"input": [[True]], "output": [[1]]}]), ["field train[0].input[0][0]"]),
    "missing_train": ("a.json", {"test": [{"input": [[1]]}]}, ["field train", "Field required"]),
    "missing_test": ("a.json", {"train": [OK_PAIR]}, ["field test", "Field required"]),
    "no_train_pairs": ("a.json", task(train=[]), ["field train", "at least 1"]),
    "train_without_output": ("a.json", task(train=[{"input": [[1]]}]), ["field train", "pair 0 has no output"]),
    "unknown_field": ("a.json", task(extra=1), ["field extra", "Extra inputs"]),
    "non_utf8": ("a.json", b"\xff\xfe{}", ["a.json", "not UTF-8"]),
    "duplicate_task_ids": ("x_challenges.json", f'{{"t1": {json.dumps(task())}, "t1": {json.dumps(task())}}}',
                           ["x_challenges.json", "task t1", "duplicate"]),
    "kaggle_not_an_object": ("x_challenges.json", [1], ["x_challenges.json", "expected an object"]),
}


def arcsynth(*args):
    return subprocess.run([sys.executable, "-m", "arcsynth.producer", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def assert_user_error(r, fragments):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_task_files(tmp_path, name):
    filename, content, fragments = CASES[name]
    path = tmp_path / filename
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert_user_error(arcsynth("tasks", "validate", str(path)), [str(path), *fragments])


def test_huge_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB on paper, nothing on disk
    assert_user_error(arcsynth("tasks", "validate", str(path)), [str(path), "more than the"])


def test_kaggle_solutions_that_do_not_match(tmp_path):
    (tmp_path / "x_challenges.json").write_text(json.dumps({"t1": task()}))
    (tmp_path / "x_solutions.json").write_text(json.dumps({"t1": [[[1]], [[2]]]}))
    assert_user_error(arcsynth("tasks", "validate", str(tmp_path / "x_challenges.json")),
                      ["x_solutions.json", "task t1", "field test", "do not match"])
    (tmp_path / "x_solutions.json").write_text(json.dumps({"t9": [[[1]]]}))
    assert_user_error(arcsynth("tasks", "validate", str(tmp_path / "x_challenges.json")),
                      ["x_solutions.json", "task t9", "not in x_challenges.json"])


def test_unknown_dataset_and_task_ids():
    assert_user_error(arcsynth("tasks", "validate", "arc-agi-3/training"), ["arc-agi-3/training", "no such file"])
    assert_user_error(arcsynth("local", "arc-agi-1/training", "--tasks", "nope"), ["task nope", "not found"])


@pytest.mark.parametrize("env, fragment", [
    ({"ARCSYNTH_EXEC_TIMEOUT_S": "-1"}, "ARCSYNTH_EXEC_TIMEOUT_S"),
    ({"ARCSYNTH_MAX_MODEL_LEN": "lots"}, "ARCSYNTH_MAX_MODEL_LEN"),
    ({"ARCSYNTH_BACKEND": "magic"}, "ARCSYNTH_BACKEND"),
    ({"ARCSYNTH_VISIBILITY_TIMEOUT_S": "2"}, "ARCSYNTH_VISIBILITY_TIMEOUT_S"),
    ({"ARCSYNTH_MAX_JOB_ATTEMPTS": "0"}, "ARCSYNTH_MAX_JOB_ATTEMPTS"),
])
def test_bad_settings_values(tmp_path, env, fragment):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(task()))
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", str(path)], capture_output=True, text=True,
                       timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env})
    assert_user_error(r, ["setting " + fragment])


@pytest.mark.parametrize("options, fragment", [
    (["--learn-from-refinements", "--epochs", "1"], "option --learn-from-refinements: needs --refine"),
    (["--select-k", "0", "--epochs", "1"], "'--select-k': 0 is not in the range"),
    (["--select", "worst", "--epochs", "1"], "'--select': 'worst' is not one of"),
    (["--learn-scope", "run"], "option --learn-scope: only applies with --epochs"),
    (["--select", "diverse"], "option --select: only applies with --epochs"),
    (["--refine-strategy", "rex"], "option --refine-strategy: only applies with --refine"),
    (["--refine", "2", "--rex-c", "5"], "option --rex-c: only applies with --refine-strategy rex"),
    (["--refine", "1", "--augment"], "option --refine: cannot be combined with --augment"),
    (["--stop-after", "3", "--keep-searching"], "option --stop-after: cannot be combined with --keep-searching"),
    (["--stop-after", "0"], "'--stop-after': 0 is not in the range"),
    (["--min-p", "1.5"], "'--min-p': 1.5 is not in the range"),
    (["--vote", "plurality"], "'--vote': 'plurality' is not one of"),
])
def test_options_that_make_no_sense_exit_2_with_one_line_before_anything_starts(tmp_path, options, fragment):
    """`submit` checks its options before it looks for a broker (none is set here) or enqueues anything."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps(task()))
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", str(path), "--out", str(tmp_path / "run"),
                        *options], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert_user_error(r, [fragment])
    assert not (tmp_path / "run").exists()
