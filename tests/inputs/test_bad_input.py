"""A corpus of malformed inputs: each gets one clear line naming the file (and task and field
where there is one), exit code 2, and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

OK_PAIR = {"input": [[1]], "output": [[1]]}


def task(**over):
    return {"train": [OK_PAIR], "test": [{"input": [[1]]}], **over}


def with_cell(text):
    """A valid task's JSON with its first train input's only cell replaced by `text`."""
    return json.dumps(task()).replace("[[1]]", f"[[{text}]]", 1)


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
    # Review: accepted, and the run then wrote no score.json without a word.
    "some_test_outputs": ("a.json", task(test=[{"input": [[1]], "output": [[1]]}, {"input": [[1]]}]),
                          ["task a", "field test", "test pair 1 has no output while test pair 0 has one"]),
    "unknown_field": ("a.json", task(extra=1), ["field extra", "Extra inputs"]),
    "non_utf8": ("a.json", b"\xff\xfe{}", ["a.json", "not UTF-8"]),
    "duplicate_task_ids": ("x_challenges.json", f'{{"t1": {json.dumps(task())}, "t1": {json.dumps(task())}}}',
                           ["x_challenges.json", "task t1", "duplicate"]),
    "kaggle_not_an_object": ("x_challenges.json", [1], ["x_challenges.json", "expected an object"]),
    # Issue 17: each of these raised a traceback or passed.
    "train_nested_200000_deep": ("a.json", '{"train": ' + "[" * 200_000 + "]" * 200_000 + ', "test": []}',
                                 ["task a", "field train[0][0][0]", "nested more than 100 levels deep"]),
    "objects_nested_2000_deep_in_a_cell": ("a.json", with_cell('{"k": ' * 2000 + "1" + "}" * 2000),
                                           ["task a", "field train[0].input[0][0].k.k", "nested more than 100 levels"]),
    "nested_in_a_kaggle_task": ("x_challenges.json", '{"t1": {"train": 1, "test": [' + "[" * 5000 + "]" * 5000 + "]}}",
                                ["task t1", "field test[0][0]", "nested more than 100"]),
    "integer_of_5000_digits": ("a.json", json.dumps(task(train=[OK_PAIR, {"input": [[1, 7]], "output": [[1]]}]))
                               .replace("7]]", "7" * 5000 + "]]"),
                               ["task a", "field train[1].input[0][1]", "a number with more than 4300 digits"]),
    "negative_integer_of_9000_digits": ("a.json", with_cell("-" + "9" * 9000),
                                        ["field train[0].input[0][0]", "more than 4300 digits"]),
    "integer_of_4000_digits_is_a_short_line": ("a.json", with_cell("3" * 4000),
                                               ["field train[0].input", "colour 33333333…(4000 digits) at row 0"]),
    "float_1e999": ("a.json", with_cell("1e999"), ["train[0].input[0][0]", "valid integer"]),
    "nan": ("a.json", with_cell("NaN"), ["train[0].input[0][0]", "valid integer"]),
    "kaggle_empty_object": ("x_challenges.json", {}, ["x_challenges.json", "no tasks"]),
    "duplicate_field_train": ("a.json", '{"train": [], "train": [], "test": []}',
                              ["task a", "field train: duplicate key 'train'"]),
    "duplicate_key_in_a_pair": ("a.json", '{"train": [{"input": [[1]], "output": [[1]], "input": [[2]]}], "test": []}',
                                ["task a", "field train[0].input: duplicate key 'input'"]),
    "duplicate_key_in_a_kaggle_task": ("x_challenges.json", '{"t1": {"train": [], "test": [], "test": []}}',
                                       ["task t1", "field test: duplicate key 'test'"]),
    "escaped_duplicate_task_id": ("x_challenges.json", f'{{"t1": {json.dumps(task())}, "\\u00741": {json.dumps(task())}}}',
                                  ["task t1", "duplicate task id"]),
    "unknown_field_named_by_100k_characters": ("a.json", task(**{"k" * 100_000: 1}),
                                               ["field kkkkkkkk", "(100000 characters): Extra inputs"]),
    "unknown_field_with_a_newline": ("a.json", task(**{"a\nb": 1}), ["field a\\nb: Extra inputs"]),
    "kaggle_task_id_with_a_newline": ("x_challenges.json", {"t\n1": {"train": 1}}, ["task t\\n1: field train"]),
    "a_million_unknown_keys": ("a.json", task(**{f"k{i}": 0 for i in range(1_000_000)}), ["field k0: Extra inputs"]),
    "200000_tiny_pairs": ("a.json", task(train=[OK_PAIR] * 200_000), ["JSON arrays and objects", "MiB to validate"]),
    "a_million_empty_lists": ("a.json", task(x=[[]] * 1_000_000), ["JSON arrays and objects", "more than the"]),
    # Issue 18: row 0 not a list was reported as "row 1 has 31 cells, row 0 has 0".
    "grid_row_0_not_a_list": ("a.json", task(train=[{"input": [5, [1] * 31], "output": [[1]]}]),
                              ["field train[0].input: grid row 0 is not a list"]),
    "kaggle_task_id_empty": ("x_challenges.json", {"": task()}, ['task "": field id']),
}


def arcsynth(*args):
    return subprocess.run([sys.executable, "-m", "arcsynth.producer", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def assert_user_error(r, fragments):
    lines = r.stderr.strip().splitlines()
    assert len(r.stderr) < 1000, r.stderr[:1000]
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


def _folder(tmp_path, kind):
    """Folders that hold no task file one could run, each a neighbour of an empty dataset."""
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "not_json":
        (folder / "notes.txt").write_text("hello")
        (folder / "a.json.bak").write_text(json.dumps(task()))
    elif kind == "only_solutions":
        (folder / "x_solutions.json").write_text("{}")
    elif kind == "kaggle_files":
        (folder / "arc-agi_training_challenges.json").write_text(json.dumps({"t1": task()}))
        (folder / "sample_submission.json").write_text("{}")
    elif kind == "folder_named_json":
        (folder / "a.json").mkdir()
    elif kind == "fifo":
        os.mkfifo(folder / "a.json")  # reading it would block for ever
    elif kind == "device":
        (folder / "a.json").symlink_to("/dev/zero")  # reading it would never end
    elif kind == "broken_link":
        (folder / "a.json").symlink_to(folder / "gone.json")
    return folder


@pytest.mark.parametrize("kind, fragments", [
    ("empty", ["no *.json task files"]),
    ("not_json", ["no *.json task files"]),
    ("only_solutions", ["no *.json task files"]),
    ("kaggle_files", ["a folder of Kaggle files", "arc-agi_training_challenges.json"]),
    ("folder_named_json", ["a.json: not a regular file"]),
    ("fifo", ["a.json: not a regular file"]),
    ("device", ["a.json: not a regular file"]),
    ("broken_link", ["a.json: cannot read: No such file"]),
])
def test_folders_without_a_task_to_run(tmp_path, kind, fragments):
    folder = _folder(tmp_path, kind)
    assert_user_error(arcsynth("tasks", "validate", str(folder)), [str(folder), *fragments])


def test_a_name_too_long_for_the_filesystem():
    name = "a" * 5000 + ".json"
    assert_user_error(arcsynth("tasks", "validate", name), ["aaaa", "cannot read: File name too long"])


MEASURE = """
import resource, sys
from pathlib import Path
from arcsynth.common.data import TaskLoadError, load_tasks
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    print("ok", len(load_tasks(sys.argv[1])))
except TaskLoadError as exc:
    print("error", str(exc)[:200])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _grid_file(path):
    """The largest well-formed task file under the cap: as many 30x30 pairs as fit."""
    from arcsynth.common.task_json import MAX_FILE_BYTES

    grid = [[1] * 30 for _ in range(30)]
    pair = json.dumps({"input": grid, "output": grid}, separators=(",", ":"))
    n = (MAX_FILE_BYTES - 100) // (len(pair) + 1)
    path.write_text('{"train":[' + ",".join([pair] * n) + '],"test":[{"input":[[1]]}]}')


def _short_strings_file(path):
    """Short strings cost the most per byte among values the estimate does not count by brackets."""
    from arcsynth.common.task_json import MAX_FILE_BYTES

    path.write_text("[" + ",".join(['"ab"'] * ((MAX_FILE_BYTES - 10) // 5)) + "]")


def _many_keys_file(path):
    from arcsynth.common.task_json import MAX_FILE_BYTES

    keys = ",".join(f'"k{i}":0' for i in range((MAX_FILE_BYTES - 100) // 14))
    path.write_text('{"train":[{"input":[[1]],"output":[[1]],' + keys + '}],"test":[]}')


@pytest.mark.parametrize("make, outcome", [(_grid_file, "ok 1"), (_short_strings_file, "error"),
                                           (_many_keys_file, "error")])
def test_validating_a_file_at_the_cap_stays_within_its_memory_budget(tmp_path, make, outcome):
    """A file just under `MAX_FILE_BYTES` of the shapes that cost the most memory per byte (a 99 MB
    file took 4.5 GB before the cap was lowered and pairs were validated one at a time)."""
    from arcsynth.common.task_json import memory_budget

    path = tmp_path / "big.json"
    make(path)
    r = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result, grown_kib = r.stdout.splitlines()
    assert result.startswith(outcome), result
    assert int(grown_kib) * 1024 <= memory_budget(path.stat().st_size), (result, int(grown_kib) >> 10)


def test_an_adapter_trained_in_another_prompt_format_is_refused(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "arcsynth_manifest.json").write_text(json.dumps({"prompt_format": "barc"}))
    path = tmp_path / "t.json"
    path.write_text(json.dumps(task()))
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", str(path), "--adapter", str(adapter)],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert_user_error(r, ["option --adapter", "trained with --prompt barc", "this run uses --prompt arcsynth"])
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", str(path), "--prompt", "base", "--refine", "1"],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert_user_error(r, ["option --refine", "base prompt format"])



@pytest.mark.parametrize("args, fragments", [
    (["--samples", "0"], ["--samples", "'0'"]),
    (["--samples", "lots"], ["--samples", "'lots'"]),
    (["--samples", "a=0", "--model", "a"], ["--samples", "'a=0'"]),
    (["--samples", "=5"], ["--samples", "'=5'"]),
    (["--model", "a", "--samples", "a=4,b=2"], ["option --samples: b is not a model of this run"]),
    (["--model", "a", "--samples", "a=4,a=2"], ["--samples", "'a=4,a=2' gives model a more than one count"]),
    (["--model", "a", "--model", "a"], ["option --model: a model is named twice"]),
    (["--model", "  "], ["option --model: a model name is empty"]),
    (["--model", "org/m", "--model", "org_m"], ["option --model: org/m and org_m would share the queue inference.org_m"]),
])
def test_bad_model_and_sample_options(args, fragments):
    """Several models and samples by model: a bad value is one line naming the option, exit 2, before anything starts."""
    assert_user_error(arcsynth("local", "arc-agi-1/training", "--limit", "1", *args), fragments)


# Issue 18: bad input that gave a traceback, two lines, the wrong file, or nothing at all.

def run_cli(*args, cwd=None, **env):
    """`arcsynth ARGS` with nothing but PATH and HOME in its environment, plus `env`."""
    return subprocess.run([sys.executable, "-m", "arcsynth.producer", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env})


@pytest.mark.parametrize("solutions, fragments", [
    ({"t1": [[[10]]], "t2": [[[1]]]}, ["task t1", "field t1[0]: colour 10 at row 0, column 0 is outside 0..9"]),
    ({"t1": [[1]], "t2": [[[1]]]}, ["task t1", "field t1[0]: grid row 0 is not a list"]),
    ({"t1": [[["1"]]], "t2": [[[1]]]}, ["task t1", "field t1[0][0][0]: Input should be a valid integer"]),
    ({"t1": [[[1, 2], [3]]], "t2": [[[1]]]}, ["task t1", "field t1[0]: grid is ragged"]),
    ({"t1": [[[1]]], "t2": [[[1]] * 31]}, ["task t2", "field t2[0]: grid must have 1..30 rows, got 31"]),
    ({"t1": [[[1]]]}, ["task t2: missing (it is in x_challenges.json"]),
])
def test_kaggle_solutions_errors_name_the_solutions_file(tmp_path, solutions, fragments):
    """An error in x_solutions.json names that file and the field in it, never x_challenges.json; a
    solutions file that leaves out a task of the challenges is refused (it would give no score)."""
    (tmp_path / "x_challenges.json").write_text(json.dumps({"t1": task(), "t2": task()}))
    (tmp_path / "x_solutions.json").write_text(json.dumps(solutions))
    r = arcsynth("tasks", "validate", str(tmp_path / "x_challenges.json"))
    assert_user_error(r, [f"error: {tmp_path / 'x_solutions.json'}: ", *fragments])


@pytest.mark.parametrize("name, shown", [
    ("bad\nname.json", "bad\\nname.json: invalid JSON"),
    ("tab\there.json", "tab\\there.json: invalid JSON"),
])
def test_file_names_with_control_characters_are_shown_escaped(tmp_path, name, shown):
    (tmp_path / name).write_text('{"train": [')
    assert_user_error(arcsynth("tasks", "validate", str(tmp_path / name)), [shown])


def test_names_that_are_not_utf8_are_refused_by_validate_and_submit(tmp_path):
    """A folder, file or model name with a byte that is not UTF-8 cannot be written to run.json or Redis:
    `tasks validate` and `submit` refuse it alike, before anything starts."""
    folder = tmp_path / "d\udcff"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(task()))
    for args in (["tasks", "validate", str(folder)], ["submit", str(folder), "--out", str(tmp_path / "run")]):
        assert_user_error(arcsynth(*args), ["d\\xff: the name is not UTF-8 (\\xff at character"])
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x\udcff.json").write_text(json.dumps(task()))
    assert_user_error(arcsynth("tasks", "validate", str(tmp_path / "e")), ["e/x\\xff.json: task x\\udcff: field id"])
    path = tmp_path / "t.json"
    path.write_text(json.dumps(task()))
    assert_user_error(arcsynth("submit", str(path), "--model", "m\udcff", "--out", str(tmp_path / "run")),
                      ["option --model: not UTF-8 (\\xff at character 1)"])
    assert_user_error(arcsynth("submit", str(path), "--adapter", "a\udcff", "--out", str(tmp_path / "run")),
                      ["option --adapter: not UTF-8"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("env, fragment", [
    ({"ARCSYNTH_BROKER_URL": "notaurl"}, "ARCSYNTH_BROKER_URL: not a Redis URL: want redis://"),
    ({"ARCSYNTH_BROKER_URL": "http://localhost:6379"}, "ARCSYNTH_BROKER_URL: not a Redis URL"),
    ({"ARCSYNTH_BROKER_URL": "redis://localhost:notaport"}, "ARCSYNTH_BROKER_URL: not a Redis URL: want redis://"),
    ({"ARCSYNTH_BROKER_URL": "redis://:secret@localhost:99999"}, "ARCSYNTH_BROKER_URL: not a Redis URL"),
    # An unescaped / ? or # in a password cuts the URL there: what came before it stands where the port
    # should, and redis-py's message quoted it.
    ({"ARCSYNTH_BROKER_URL": "redis://:secr/et@localhost:6379/0"}, "ARCSYNTH_BROKER_URL: not a Redis URL"),
    ({"ARCSYNTH_BROKER_URL": "redis://user:secr?et@localhost"}, "ARCSYNTH_BROKER_URL: not a Redis URL"),
    ({"ARCSYNTH_BROKER_URL": ""}, "ARCSYNTH_BROKER_URL is not set"),
    # Review: redis-py took these (a database "abc" as 0, a query parameter it passes on), so `submit`
    # made and registered the run, then its producer (Celery) or the first connection died in a traceback.
    ({"ARCSYNTH_BROKER_URL": "redis://127.0.0.1:1/abc"}, "ARCSYNTH_BROKER_URL: not a Redis URL: the path after"),
    ({"ARCSYNTH_BROKER_URL": "redis://127.0.0.1:1/0/1"}, "ARCSYNTH_BROKER_URL: not a Redis URL: the path after"),
    ({"ARCSYNTH_BROKER_URL": "redis://:secret@127.0.0.1:1/0?ssl_cert_reqs=required"},
     "ARCSYNTH_BROKER_URL: not a Redis URL: want redis://"),
    ({"ARCSYNTH_BROKER_URL": "redis://127.0.0.1:1/0?timeout=5"}, "ARCSYNTH_BROKER_URL: not a Redis URL: want redis://"),
    ({"ARCSYNTH_RESULT_BACKEND": "notaurl"}, "ARCSYNTH_RESULT_BACKEND: not a Redis URL: want redis://"),
    ({"ARCSYNTH_EXEC_REQUIRE": "seccomp,minimal-root"}, "ARCSYNTH_EXEC_REQUIRE: no isolation layer named 'minimal-root'"),
    ({"ARCSYNTH_BROKER_URL": "redis://127.0.0.1:1/0", "ARCSYNTH_RESULT_BACKEND": "redis://127.0.0.1:1/x"},
     "ARCSYNTH_RESULT_BACKEND: not a Redis URL: the path after"),
    ({"ARCSYNTH_MODEL": ""}, "ARCSYNTH_MODEL: a model name is empty"),
    ({"ARCSYNTH_MODEL": " "}, "ARCSYNTH_MODEL: a model name is empty"),
    ({"ARCSYNTH_MODEL": "m\udcff"}, "ARCSYNTH_MODEL: not UTF-8"),
    ({"ARCSYNTH_EXEC_TIMEOUT_S": "inf"}, "ARCSYNTH_EXEC_TIMEOUT_S: Input should be a finite number"),
    ({"ARCSYNTH_EXEC_TIMEOUT_S": "nan"}, "ARCSYNTH_EXEC_TIMEOUT_S: Input should be a finite number"),
    ({"ARCSYNTH_EXEC_TIMEOUT_S": "1e20"}, "ARCSYNTH_EXEC_TIMEOUT_S: Input should be less than or equal to 3600"),
    ({"ARCSYNTH_EXEC_MEMORY_MB": str(10**13)}, "ARCSYNTH_EXEC_MEMORY_MB: Input should be less than or equal to 1048576"),
    ({"ARCSYNTH_LOST_JOB_CHECK_S": "1e-300"}, "ARCSYNTH_LOST_JOB_CHECK_S: Input should be greater than or equal to 1"),
    ({"ARCSYNTH_TEMPERATURE": "10"}, "ARCSYNTH_TEMPERATURE: Input should be less than or equal to 4"),
    ({"ARCSYNTH_TOP_P": "nan"}, "ARCSYNTH_TOP_P: Input should be a finite number"),
    ({"ARCSYNTH_MAX_TOKENS": "100000"}, "ARCSYNTH_MAX_TOKENS: Input should be less than or equal to 32768"),
    # Counts and durations without a bound once (review): they reached Redis, Celery and vLLM.
    ({"ARCSYNTH_MAX_ACTIVE_TASKS": str(10**12)}, "ARCSYNTH_MAX_ACTIVE_TASKS: Input should be less than or equal to 100000"),
    ({"ARCSYNTH_RESULT_EXPIRES_S": str(10**30)}, "ARCSYNTH_RESULT_EXPIRES_S: Input should be less than or equal to"),
    ({"ARCSYNTH_EXECUTE_TIME_LIMIT_S": str(10**30)}, "ARCSYNTH_EXECUTE_TIME_LIMIT_S: Input should be less than or equal to"),
    ({"ARCSYNTH_LOST_JOB_CHECK_S": "1e9"}, "ARCSYNTH_LOST_JOB_CHECK_S: Input should be less than or equal to 86400"),
    ({"ARCSYNTH_MAX_JOB_ATTEMPTS": str(10**20)}, "ARCSYNTH_MAX_JOB_ATTEMPTS: Input should be less than or equal to 1000"),
])
def test_bad_settings_are_named_and_checked_before_connecting(tmp_path, env, fragment):
    """Each is refused when the settings are read, naming the setting (not an option it stands in for)."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps(task()))
    r = run_cli("submit", str(path), "--out", str(tmp_path / "run"), **env)
    assert_user_error(r, ["setting " + fragment])
    assert "secr" not in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, fragment", [
    (b"ARCSYNTH_MODEL=a\nARCSYNTH_MAX_ACTIVE_TASKS=\xff\n", ".env: line 2: not UTF-8 text (byte 27 of the line)"),
    (b"ARCSYNTH_MODEL=a\n\n# note\nARCSYNTH_MAX_ACTIVE_TASKS=\"5\n", ".env: line 4: not a NAME=value line"),
    (b"ARCSYNTH_MODEL=a\nnot a setting at all\n", ".env: line 2: not a NAME=value line"),
    # Review: python-dotenv reads a bare name as one without a value, and the setting was dropped silently.
    (b"ARCSYNTH_MODEL=a\n\n  ARCSYNTH_MAX_ACTIVE_TASKS\n", ".env: line 3: ARCSYNTH_MAX_ACTIVE_TASKS has no =value"),
    (b"export ARCSYNTH_MODEL\n", ".env: line 1: ARCSYNTH_MODEL has no =value"),
    # A misspelt setting was ignored without a word.
    (b"ARCSYNTH_MODEL=a\narcsynth_max_active_task=5\n",
     ".env: line 2: arcsynth_max_active_task is not a setting (did you mean ARCSYNTH_MAX_ACTIVE_TASKS?)"),
])
def test_a_bad_env_file_line_is_named_not_skipped(tmp_path, content, fragment):
    (tmp_path / ".env").write_bytes(content)
    (tmp_path / "t.json").write_text(json.dumps(task()))
    assert_user_error(run_cli("submit", "t.json", cwd=tmp_path), [fragment])


@pytest.mark.parametrize("name, fragment", [
    ("ARCSYNTH_EXEC_ISOLATON", "environment: ARCSYNTH_EXEC_ISOLATON is not a setting (did you mean ARCSYNTH_EXEC_ISOLATION?)"),
    ("arcsynth_samples", "environment: arcsynth_samples is not a setting"),
])
def test_an_environment_variable_that_is_no_setting_is_named(tmp_path, name, fragment):
    """A misspelt `ARCSYNTH_…` variable was ignored without a word; it is refused before anything starts."""
    (tmp_path / "t.json").write_text(json.dumps(task()))
    assert_user_error(run_cli("submit", "t.json", "--out", "run", cwd=tmp_path, **{name: "job"}), [fragment])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, fragment", [
    (["--timeout", "0"], "option --timeout: Input should be greater than 0"),
    (["--timeout", "-5"], "option --timeout: Input should be greater than 0"),
    (["--timeout", "nan"], "option --timeout: Input should be a finite number"),
    (["--timeout", "inf"], "option --timeout: Input should be a finite number"),
    (["--refine", "1", "--refine-strategy", "rex", "--rex-c", "nan"], "option --rex-c: Input should be a finite number"),
    (["--temperature", "inf"], "option --temperature: Input should be a finite number"),
    (["--min-p", "nan"], "option --min-p: Input should be a finite number"),
    (["--model", "m", "--samples", "m=5000"], "option --samples: m: Input should be less than or equal to 4096"),
    (["--epochs", "1", "--samples-per-epoch", "5000"], "option --samples-per-epoch: Input should be less than or equal to 4096"),
    (["--refine", "1", "--refine-samples", "5000"], "option --refine-samples: Input should be less than or equal to 4096"),
    (["--seed", str(2**64)], "option --seed: Input should be less than or equal to 9223372036854775807"),
    (["--seed", "-1"], "option --seed: Input should be greater than or equal to 0"),
    # Counts without a bound once (review): they passed every check and reached the workers.
    (["--epochs", "1", "--finetune-steps", str(10**20)],
     "option --finetune-steps: Input should be less than or equal to 1000000"),
    (["--epochs", "100000"], "option --epochs: Input should be less than or equal to 1000"),
    (["--refine", "5000"], "option --refine: Input should be less than or equal to 1000"),
    (["--epochs", "1", "--select-k", "99999"], "option --select-k: Input should be less than or equal to 4096"),
    (["--max-active", str(10**9)], "option --max-active: Input should be less than or equal to 100000"),
])
def test_option_values_the_run_config_refuses_name_the_option(tmp_path, options, fragment):
    """Values click lets through (NaN passes every range) but the run's models refuse: one line naming
    the option, before a broker is looked for (none is set) and before anything is made."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps(task()))
    for command in ("submit", "local"):
        r = run_cli(command, str(path), "--out", str(tmp_path / "run"), *options)
        assert_user_error(r, [fragment])
    assert not (tmp_path / "run").exists()


def _out_cases(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return {"parent_is_a_file": (["--out", str(tmp_path / "a-file" / "run")], {}, "option --out: cannot create"),
            "under_proc": (["--out", "/proc/arcsynth-run"], {}, "option --out: cannot create /proc/arcsynth-run"),
            "empty": (["--out", ""], {}, "option --out: . is not a new folder's path"),
            "dot": (["--out", "."], {}, "option --out: . is not a new folder's path"),
            "dotdot": (["--out", str(tmp_path / "x" / "..")], {}, "is not a new folder's path"),
            "run_root_is_a_file": ([], {"ARCSYNTH_RUN_ROOT": str(tmp_path / "a-file")},
                                   "setting ARCSYNTH_RUN_ROOT: cannot create")}


@pytest.mark.parametrize("case", ["parent_is_a_file", "under_proc", "empty", "dot", "dotdot", "run_root_is_a_file"])
def test_a_run_directory_that_cannot_be_made_is_refused_before_connecting(tmp_path, case):
    """The broker named here does not answer: the run directory is checked (made and removed) first."""
    options, env, fragment = _out_cases(tmp_path)[case]
    (tmp_path / "t.json").write_text(json.dumps(task()))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("submit", "t.json", *options, cwd=tmp_path, ARCSYNTH_BROKER_URL="redis://127.0.0.1:1/0", **env)
    assert_user_error(r, [fragment])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_local_checks_its_run_directory_before_starting_a_cluster(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(task()))
    (tmp_path / "replay.jsonl").write_text("")
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(tmp_path / "replay.jsonl"), "TMPDIR": str(tmp_path)}
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_user_error(run_cli("local", "t.json", "--out", "/proc/nope", cwd=tmp_path, **env),
                      ["option --out: cannot create /proc/nope"])
    (tmp_path / "a-file").write_text("x")
    before.append("a-file")
    assert_user_error(run_cli("local", "t.json", cwd=tmp_path, ARCSYNTH_RUN_ROOT="a-file", **env),
                      ["setting ARCSYNTH_RUN_ROOT: cannot create a-file/"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no log folder, no artifacts, no run


@pytest.mark.parametrize("manifest, fragment", [
    ([1], "arcsynth_manifest.json: expected a JSON object, got an array"),
    ("barc", "arcsynth_manifest.json: expected a JSON object, got a string"),
    ({"prompt_format": 5}, "arcsynth_manifest.json: field prompt_format: expected a string"),
])
def test_an_adapter_manifest_that_is_not_an_object_is_named(tmp_path, manifest, fragment):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "arcsynth_manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "t.json").write_text(json.dumps(task()))
    assert_user_error(run_cli("submit", "t.json", "--adapter", "adapter", cwd=tmp_path), ["option --adapter: ", fragment])


@pytest.mark.parametrize("config, tokenizer, fragment", [
    ("{}", "[1]", "option --model: model ./m: m/tokenizer_config.json: expected a JSON object, got an array"),
    ("{}", '"barc"', "m/tokenizer_config.json: expected a JSON object, got a string"),
    ("{}", '{"chat_template": ', "m/tokenizer_config.json: invalid JSON at line 1"),
    ("[1]", "{}", "model ./m: m/config.json: expected a JSON object, got an array"),
])
def test_a_model_config_that_is_not_an_object_is_named(tmp_path, config, tokenizer, fragment):
    """Checked by `local` before it starts anything (the folder holds nothing new afterwards)."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(config)
    (tmp_path / "m" / "tokenizer_config.json").write_text(tokenizer)
    (tmp_path / "t.json").write_text(json.dumps(task()))
    assert_user_error(run_cli("local", "t.json", "--model", "./m", cwd=tmp_path), [fragment])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "t.json"]


def _run_dir(tmp_path):
    from arcsynth.common.models import Task
    from tests.support.crafted import candidate, write_run

    t = Task(id="t1", train=[{"input": [[1]], "output": [[1]]}], test=[{"input": [[1]], "output": [[1]]}])
    return write_run(tmp_path / "run", [t], {"t1": [candidate(t, 0, [[[1]]], [[[1]]])]}).path


# file, a line that does not validate, and what the error names
BAD_RUN_LINES = {
    "tasks": ("tasks.jsonl", '{"task_id": "t1", "status": 12}', "tasks.jsonl: line 2: field status: Input should be"),
    "inputs": ("inputs.jsonl", '{"id": "t2", "train": []}', "inputs.jsonl: line 2: field train: List should have"),
    "candidates": ("candidates.jsonl", '{"task_id": "t1", "index": "x"}', "candidates.jsonl: line 2: field index"),
    "candidates_not_json": ("candidates.jsonl", "{oops", "candidates.jsonl: line 2: field task_id: missing or not JSON"),
    "not_utf8": ("tasks.jsonl", b'{"task_id": "t\xff"}', "tasks.jsonl: line 2: not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUN_LINES))
@pytest.mark.parametrize("command", ["report", "results", "compare"])
def test_a_bad_line_in_a_run_directory_is_one_line_for_every_command(tmp_path, case, command):
    """`report` and `results` name the file, line and field as `compare` does, and write nothing
    (`results` no placeholder submission)."""
    run = _run_dir(tmp_path)
    name, line, fragment = BAD_RUN_LINES[case]
    with open(run / name, "ab") as f:
        f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    for derived in ("submission.json", "score.json", "report.html"):
        (run / derived).unlink(missing_ok=True)
    args = [command, str(run)] if command != "compare" else [command, str(run), str(run), "--out", str(tmp_path / "c.html")]
    assert_user_error(run_cli(*args), [fragment])
    assert not any((run / derived).exists() for derived in ("submission.json", "score.json", "report.html"))
    assert not (tmp_path / "c.html").exists()


@pytest.mark.parametrize("args, fragment", [
    (["compare", "RUN", "RUN", "--out", "/proc/x.html"], "option --out: cannot create /proc/x.html"),
    (["compare", "RUN", "RUN", "--out", "A-FILE/x.html"], "option --out: cannot create"),
    (["compare", "RUN", "RUN", "--out", "."], "'--out': File '.' is a directory"),
    (["export", "RUN", "--out", "/proc/exp"], "option --out: cannot create /proc/exp"),
    (["export", "RUN", "--out", "A-FILE/exp"], "option --out: cannot create"),
])
def test_compare_and_export_check_their_out_path_first(tmp_path, args, fragment):
    run = _run_dir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    args = [str(run) if a == "RUN" else a.replace("A-FILE", str(tmp_path / "a-file")) for a in args]
    r = run_cli(*args, cwd=tmp_path)
    assert_user_error(r, [fragment])
    assert r.stdout == ""  # the table is not printed before the error


@pytest.mark.parametrize("args, env, fragment", [
    (["workers", "inference", "--gpus", "0"], {}, "setting ARCSYNTH_BROKER_URL is not set"),
    (["workers", "inference", "--gpus", "0"], {"ARCSYNTH_BROKER_URL": "notaurl"}, "setting ARCSYNTH_BROKER_URL: not a"),
    (["workers", "inference", "--gpus", "0", "--restart-window", "nan"], {}, "'--restart-window': 'nan' is not a finite"),
    (["workers", "inference", "--gpus", "0", "--restart-window", "inf"], {}, "'--restart-window': 'inf' is not a finite"),
    (["cancel", "some-run", "--timeout", "nan"], {}, "'--timeout': 'nan' is not a finite number"),
])
def test_operator_commands_check_settings_and_options_before_starting(args, env, fragment):
    """`workers` with no broker used to start (and restart) its workers four times, then exit 1."""
    import time

    started = time.monotonic()
    assert_user_error(run_cli(*args, **env), [fragment])
    assert time.monotonic() - started < 30


# Review: run directories whose files are not what they should be.

def _spoil(path, kind):
    """Put a folder, a FIFO (reading it would block for ever) or a link to /dev/zero (never ends) at `path`."""
    path.unlink(missing_ok=True)
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize("name, kind", [("candidates.jsonl", "fifo"), ("tasks.jsonl", "folder"), ("inputs.jsonl", "fifo"),
                                        ("learning.jsonl", "device"), ("run.json", "folder"), ("candidates.jsonl", "device")])
def test_a_run_file_that_is_not_a_regular_file_is_named_not_read(tmp_path, name, kind):
    """Each command on runs used to hang on a FIFO or /dev/zero and give a traceback on a folder."""
    run = _run_dir(tmp_path)
    _spoil(run / name, kind)
    for args in (["report", str(run)], ["results", str(run)], ["export", str(run), "--out", str(tmp_path / "exp")],
                 ["compare", str(run), str(run), "--out", str(tmp_path / "c.html")]):
        if name == "learning.jsonl" and args[0] in ("compare", "export"):
            continue  # they do not read it
        assert_user_error(run_cli(*args), [f"{run / name}: not a regular file"])
    assert sorted(p.name for p in run.iterdir()) == ["candidates.jsonl", "inputs.jsonl", "learning.jsonl", "run.json",
                                                     "tasks.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _edit_run_json(run, **fields):
    config = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**config, **fields}))


@pytest.mark.parametrize("case, fragment", [
    ("max_active_0", "run.json: field max_active: Input should be greater than or equal to 1"),
    ("sampling_n_string", "run.json: field sampling.n: Input should be a valid integer"),
    ("torn", "run.json: Invalid JSON: EOF while parsing"),
    ("inputs_repeat_a_task", "inputs.jsonl: line 2: field id: task t1 repeats an earlier line's task"),
    ("inputs_hold_another_task", "inputs.jsonl: line 1: field id: task t2 is not in run.json's task_ids"),
    ("inputs_empty", "inputs.jsonl: task t1 of run.json's task_ids is missing"),
])
def test_a_run_json_or_inputs_that_do_not_validate_name_the_field(tmp_path, case, fragment):
    """run.json was "not a run (ValidationError)"; inputs.jsonl repeating a task counted it twice."""
    run = _run_dir(tmp_path)
    inputs = (run / "inputs.jsonl").read_text()
    if case == "max_active_0":
        _edit_run_json(run, max_active=0)
    elif case == "sampling_n_string":
        _edit_run_json(run, sampling={"n": "many"})
    elif case == "torn":
        (run / "run.json").write_text((run / "run.json").read_text()[:20])
    elif case == "inputs_repeat_a_task":
        (run / "inputs.jsonl").write_text(inputs * 2)
    elif case == "inputs_hold_another_task":
        (run / "inputs.jsonl").write_text(inputs.replace('"t1"', '"t2"'))
    else:
        (run / "inputs.jsonl").write_text("")
    for args in (["report", str(run)], ["results", str(run)], ["export", str(run), "--out", str(tmp_path / "exp")],
                 ["compare", str(run), str(run), "--out", str(tmp_path / "c.html")]):
        assert_user_error(run_cli(*args), [f"{run}/{fragment}"])
    assert not any((run / derived).exists() for derived in ("submission.json", "score.json", "report.html"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("command, name", [("results", "submission.json"), ("results", "score.json"),
                                           ("results", "submission.json.tmp"), ("report", "report.html"),
                                           ("report", "report.html.tmp")])
def test_a_folder_where_results_go_is_refused_before_anything_is_written(tmp_path, command, name):
    """A folder named score.json gave a traceback after submission.json was written, and left a .tmp behind."""
    run = _run_dir(tmp_path)
    for derived in ("submission.json", "score.json", "report.html"):
        (run / derived).unlink(missing_ok=True)
    (run / name).mkdir()
    target = name.removesuffix(".tmp")
    assert_user_error(run_cli(command, str(run)), [f"{run / target}: cannot write: {name} is not a regular file"])
    assert sorted(p.name for p in run.iterdir()) == sorted(["candidates.jsonl", "inputs.jsonl", "learning.jsonl",
                                                            "run.json", "tasks.jsonl", name])


@pytest.mark.parametrize("command", ["report", "results", "status"])
def test_a_run_that_is_no_run_directory_says_so_not_that_the_broker_is_unset(tmp_path, command):
    """Without a broker, a folder that is not a run, a file, or no such path were all "ARCSYNTH_BROKER_URL is not set"."""
    run = _run_dir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli(command, str(tmp_path / "empty")), [f"{tmp_path / 'empty' / 'run.json'}: missing (not a run"])
    assert_user_error(run_cli(command, str(run / "run.json")), [f"{run / 'run.json'}: not a run directory (give its folder)"])
    assert_user_error(run_cli(command, str(tmp_path / "gone")),
                      [f"run {tmp_path / 'gone'}: no such run directory (a run id is looked up in Redis: set ARCSYNTH_BROKER"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]


@pytest.mark.parametrize("replay", ["fifo", "/dev/zero", "."])
def test_local_refuses_a_replay_file_that_is_not_a_regular_file(tmp_path, replay):
    """`local` read ARCSYNTH_REPLAY_FILE before starting anything and waited for ever on a FIFO or /dev/zero."""
    (tmp_path / "t.json").write_text(json.dumps(task()))
    if replay == "fifo":
        os.mkfifo(tmp_path / "fifo")
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": replay, "TMPDIR": str(tmp_path)}
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_user_error(run_cli("local", "t.json", cwd=tmp_path, **env), [f"replay file {replay}: not a regular file"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_env_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    """pydantic-settings reads a FIFO .env, which blocked every command until something wrote to it."""
    os.mkfifo(tmp_path / ".env")
    (tmp_path / "t.json").write_text(json.dumps(task()))
    assert_user_error(run_cli("submit", "t.json", cwd=tmp_path), [".env: a FIFO, not a regular file"])
    assert_user_error(run_cli("report", "some-run", cwd=tmp_path), [".env: a FIFO, not a regular file"])


@pytest.mark.parametrize("target, fragment", [("/nonexistent/env", ".env: a link to nothing"),
                                              (".env", ".env: a link to nothing (or a loop of links)"),
                                              ("/dev/zero", ".env: not a regular file (a device or socket)")])
def test_a_env_file_that_cannot_be_read_is_refused_not_skipped(tmp_path, target, fragment):
    """Review: a dangling or looping link, or a device, was passed over: its settings silently missing."""
    (tmp_path / ".env").symlink_to(target)
    (tmp_path / "t.json").write_text(json.dumps(task()))
    assert_user_error(run_cli("submit", "t.json", cwd=tmp_path), [fragment])


@pytest.mark.parametrize("args, fragment", [
    (["tasks", "validate", ""], '"": no dataset named'),
    (["submit", "", "--out", "RUN"], '"": no dataset named'),
    (["submit", "t.json", "--tasks", ",", "--out", "RUN"], "option --tasks: names no task id"),
    (["local", "t.json", "--tasks", "", "--out", "RUN"], "option --tasks: names no task id"),
    (["tasks", "validate", "loop.json"], "loop.json: cannot read: Too many levels of symbolic links"),
    (["tasks", "validate", "dangling.json"], "dangling.json: cannot read: No such file or directory"),
])
def test_a_selection_that_names_nothing_is_refused_not_taken_for_everything(tmp_path, args, fragment):
    """An empty DATASET was the current folder, and `--tasks ,` every task: both ran what no one named.
    A link that loops or leads nowhere was "no such file, folder or dataset"."""
    (tmp_path / "t.json").write_text(json.dumps(task()))
    (tmp_path / "loop.json").symlink_to("loop.json")
    (tmp_path / "dangling.json").symlink_to("gone.json")
    args = [str(tmp_path / "run") if a == "RUN" else a for a in args]
    assert_user_error(run_cli(*args, cwd=tmp_path), [fragment])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.json", "loop.json", "t.json"]


@pytest.mark.parametrize("test_field, solutions, fragments", [
    ("x", {"t1": [[[1]]]}, ["x_challenges.json: task t1: field test: Input should be a valid list"]),
    (None, {"t1": [[[1]]]}, ["x_challenges.json: task t1: field test: Field required"]),
    ([{"input": [[1]]}], "dangling", ["x_solutions.json: cannot read: No such file"]),
    ([{"input": [[1]]}], "fifo", ["x_solutions.json: not a regular file"]),
])
def test_a_kaggle_error_names_the_file_at_fault(tmp_path, test_field, solutions, fragments):
    """A challenges file whose test pairs are no list was blamed on the solutions file ("solutions do
    not match the 0 test inputs"); a solutions link that leads nowhere was skipped without a word,
    and the run went unscored."""
    raw = task() if test_field is None else task(test=test_field)
    if test_field is None:
        del raw["test"]
    (tmp_path / "x_challenges.json").write_text(json.dumps({"t1": raw}))
    if solutions == "dangling":
        (tmp_path / "x_solutions.json").symlink_to(tmp_path / "gone.json")
    elif solutions == "fifo":
        os.mkfifo(tmp_path / "x_solutions.json")
    else:
        (tmp_path / "x_solutions.json").write_text(json.dumps(solutions))
    assert_user_error(arcsynth("tasks", "validate", str(tmp_path / "x_challenges.json")), fragments)


@pytest.mark.parametrize("command", ["results", "report", "resume", "cancel"])
def test_a_run_id_whose_run_directory_is_gone_is_one_line_and_changes_nothing(tmp_path, command):
    """Review: a run id Redis knows whose directory was moved or removed gave a traceback, after `resume`
    and `cancel` had set the run resuming or cancelling (with no producer to go on)."""
    from arcsynth.common.redis_client import redis_client
    from arcsynth.producer.redis_server import RedisServer
    from arcsynth.producer.runstate import RunState

    with RedisServer() as server:
        state = RunState(redis_client(server.url), "gone-run")
        state.register(str(tmp_path / "gone"), 1, "t.json", False)
        assert_user_error(run_cli(command, "gone-run", cwd=tmp_path, ARCSYNTH_BROKER_URL=server.url),
                          [f"run gone-run: its run directory is not here: {tmp_path / 'gone' / 'run.json'}: missing"])
        assert state.state() == "queued"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("auth, options, fragment", [
    ("ops", [], "setting ARCSYNTH_FLOWER_BASIC_AUTH: want user:password"),
    ("ops:pw,other", [], "setting ARCSYNTH_FLOWER_BASIC_AUTH: want user:password"),
    ("ops:", [], "setting ARCSYNTH_FLOWER_BASIC_AUTH: want user:password"),
    ("ops:pw", ["--persistent", "/proc/flower.db"], "option --persistent: cannot write /proc/flower.db"),
    ("ops:pw", ["--persistent", "A-FILE/flower.db"], "option --persistent: cannot write"),
])
def test_flower_refuses_auth_that_locks_everyone_out_and_a_state_file_it_cannot_write(tmp_path, auth, options, fragment):
    """Review: Flower started with credentials no browser can send (every request then 401), or with a
    --persistent file it could not create (a traceback at its first save, and it kept running)."""
    (tmp_path / "a-file").write_text("x")
    options = [o.replace("A-FILE", str(tmp_path / "a-file")) for o in options]
    r = run_cli("flower", "--port", "1", *options, ARCSYNTH_BROKER_URL="redis://127.0.0.1:1/0",
                ARCSYNTH_FLOWER_BASIC_AUTH=auth)
    assert_user_error(r, [fragment])
    assert "pw" not in r.stderr
