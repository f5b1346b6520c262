"""`compare` on two crafted run directories over partly different tasks."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from arcsynth.common.models import LearnConfig, LoraConfig, RunConfig, SamplingConfig, Task
from arcsynth.producer.compare import CompareError, compare_runs, comparison_text, notable_settings
from arcsynth.producer.lab_cli import compare
from tests.support.crafted import candidate, write_run


def task(tid: str) -> Task:
    return Task(id=tid, train=[{"input": [[1]], "output": [[2]]}], test=[{"input": [[3]], "output": [[4]]}])


A, B, C, D = (task(t) for t in "abcd")


def right(t: Task, i: int, **kw):
    return candidate(t, i, [[[2]]], [[[4]]], **kw)


def wrong(t: Task, i: int, **kw):
    return candidate(t, i, [[[0]]], [[[0]]], **kw)


@pytest.fixture
def runs(tmp_path):
    # Search alone over a, b, c: solves a and b. Search and learn over b, c, d: solves c and d, not b.
    search = write_run(tmp_path / "search", [A, B, C], {
        "a": [right(A, 0), wrong(A, 1)], "b": [wrong(B, 0), right(B, 1)], "c": [wrong(C, 0), wrong(C, 1)]},
        run_id="search")
    adapter = tmp_path / "adapters" / "c1"
    adapter.mkdir(parents=True)
    (adapter / "arcsynth_manifest.json").write_text(json.dumps({"seconds": 30.0}))
    learn = write_run(tmp_path / "learn", [B, C, D], {
        "b": [wrong(B, 0), wrong(B, 1), wrong(B, 0, epoch=1, adapter="/gone/adapter")],
        "c": [wrong(C, 0), wrong(C, 1), right(C, 0, epoch=1, adapter=str(adapter))],
        "d": [right(D, 0), wrong(D, 1)]}, run_id="learn", learn={"epochs": 1})
    return search.path, learn.path


def test_compare_on_common_tasks_names_the_count_and_the_tasks_one_run_solved(runs, tmp_path):
    c = compare_runs(runs)
    assert (c.names, c.totals, c.common) == (["search", "learn"], [3, 3], ["b", "c"])
    search, learn = c.runs
    assert [r.task_id for r in search.rows] == ["b", "c"] and [r.task_id for r in learn.rows] == ["b", "c"]
    assert (search.score, search.solved, search.samples, learn.score, learn.solved, learn.samples) == (0.5, 1, 4, 0.5, 1, 6)
    assert learn.times.finetunes == 2 and learn.times.finetune_s == 30.0  # one manifest found, one adapter gone
    assert [(o.solved_by, o.not_by, o.tasks) for o in c.only_solved] == [("search", "learn", ["b"]), ("learn", "search", ["c"])]

    text = comparison_text(c)
    lines = text.splitlines()
    assert lines[0] == "compared on 2 common tasks (search has 3, learn has 3)"
    assert lines[1].split() == ["run", "score", "solved", "samples/task", "wall", "time", "fine-tune", "time",
                                "solved/1k", "samples"]
    assert lines[2].split()[:4] == ["search", "0.500", "1", "2.0"] and lines[2].split()[-3:] == ["0", "s", "250.00"]
    assert lines[3].split()[:4] == ["learn", "0.500", "1", "3.0"] and lines[3].split()[-3:] == ["30", "s", "166.67"]
    assert lines[4:] == ["settings that differ: learn.epochs 0 / 1",
                         "solved by search but not learn (1): b", "solved by learn but not search (1): c"]
    assert c.settings == {"learn.epochs": ["0", "1"]}


def test_notable_settings_are_the_model_and_what_differs_from_the_defaults():
    config = RunConfig(run_id="x", dataset="arc-agi-1/evaluation", task_ids=["a"], model="smollm2",
                       sampling=SamplingConfig(n=64, temperature=0.7),
                       learn=LearnConfig(epochs=2, refine_rounds=1, lora=LoraConfig(rank=8)))
    assert notable_settings(config) == {"model": "smollm2", "sampling.n": "64", "sampling.temperature": "0.7",
                                        "learn.epochs": "2", "learn.refine_rounds": "1", "learn.lora.rank": "8"}


def test_compare_command_prints_the_table_and_writes_one_chart(runs, tmp_path):
    out = tmp_path / "cmp" / "compare.html"
    result = CliRunner().invoke(compare, [str(p) for p in runs] + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "compared on 2 common tasks" in result.output and result.output.strip().endswith(f"chart: {out}")
    page = out.read_text()
    assert re.search(r'id="common">2<', page) and "src=" not in page and "href=" not in page
    lines = re.findall(r'<polyline class="curve (\S+)" data-series="([^"]+)" data-epoch="all" data-points="([^"]+)"', page)
    # Over b and c: search samples 2 per task (one right of b's two), learn 3 (one right of c's three).
    assert lines == [("pass-at-n", "search", "1:0.25 2:0.5"), ("score-at-n", "search", "1:0 2:0.5"),
                     ("pass-at-n", "learn", "1:0.166667 2:0.333333 3:0.5"), ("score-at-n", "learn", "1:0 2:0 3:0.5")]


def test_bad_runs_are_one_line_and_exit_2(runs, tmp_path):
    lonely = write_run(tmp_path / "lonely", [task("z")], {"z": [wrong(task("z"), 0)]}, run_id="lonely")
    with pytest.raises(CompareError, match="field task_ids: no task in common"):
        compare_runs([runs[0], lonely.path])
    with pytest.raises(CompareError, match="needs two runs or more"):
        compare_runs([runs[0]])
    for args, message in (([str(runs[0]), str(tmp_path)], f"error: {tmp_path / 'run.json'}: missing (not a run directory)"),
                          ([str(runs[0]), str(lonely.path)], "field task_ids: no task in common")):
        result = CliRunner().invoke(compare, args + ["--out", str(tmp_path / "x.html")])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and message in result.output
    with open(runs[1] / "candidates.jsonl", "a") as f:
        f.write('{"task_id":"b","index":"x"}\n')
    result = CliRunner().invoke(compare, [str(p) for p in runs] + ["--out", str(tmp_path / "y.html")])
    assert result.exit_code == 2 and re.search(r"candidates.jsonl: line 9: field index: ", result.output)


def test_an_out_whose_temporary_name_is_a_folder_is_one_line_before_the_table(runs, tmp_path):
    """Review: the table was printed, then a traceback (IsADirectoryError) at compare.html.tmp."""
    (tmp_path / "compare.html.tmp").mkdir()
    result = CliRunner().invoke(compare, [str(p) for p in runs] + ["--out", str(tmp_path / "compare.html")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: option --out: {tmp_path / 'compare.html'}: cannot write: compare.html.tmp is not a regular file"]


def test_the_printed_comparison_escapes_control_characters_in_task_ids(tmp_path):
    """A Kaggle key may hold any character: an escape sequence reached the terminal as it was."""
    odd = task("x\x1b[2Jy")
    one = write_run(tmp_path / "one", [odd], {odd.id: [right(odd, 0)]}, run_id="one")
    two = write_run(tmp_path / "two", [odd], {odd.id: [wrong(odd, 0)]}, run_id="two")
    text = comparison_text(compare_runs([one.path, two.path]))
    assert "\x1b" not in text and "x\\u001b[2Jy" in text
