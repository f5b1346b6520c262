"""The report's summary on a 400-task run: opens fast in headless Chromium, its chart and table say what
the run directory says, and a task link opens and scrolls to the task's section."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from arcsynth.common.data import load_tasks
from arcsynth.producer.report import write_report
from arcsynth.producer.summary import summarise
from tests.support.crafted import run_program, write_run

PROGRAMS = {  # what a model might write; a few of these solve some of ARC-AGI-1's training tasks
    "flip": lambda g: g[::-1, ::-1], "transpose": lambda g: g.T, "identity": lambda g: g,
    "rot90": lambda g: np.rot90(g), "fliplr": lambda g: g[:, ::-1], "flipud": lambda g: g[::-1],
    "rot270": lambda g: np.rot90(g, 3), "tile": lambda g: np.tile(g, (3, 3)),
}
LATER = {"antitranspose": lambda g: np.rot90(g, 2).T, "crop": lambda g: g[:1]}


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """400 tasks, 8 programs each, and 2 more in epoch 1 for the tasks no program fit."""
    tasks = load_tasks("arc-agi-1/training")
    assert len(tasks) == 400
    cands = {}
    for t in tasks:
        cs = [run_program(t, fn, i, f"def transform(grid):\n    # {name}\n    return grid", seconds=0.25)
              for i, (name, fn) in enumerate(PROGRAMS.items())]
        if not any(c.execution.all_train_correct for c in cs):
            cs += [run_program(t, fn, i, f"def transform(grid):\n    # {name}\n    return grid", epoch=1)
                   for i, (name, fn) in enumerate(LATER.items())]
        cands[t.id] = cs
    rundir = write_run(tmp_path_factory.mktemp("big") / "run", tasks, cands, samples=8,
                       learn={"epochs": 1, "samples_per_epoch": 2})
    return rundir, write_report(rundir)


def _points(line) -> list[tuple[int, float]]:
    return [(int(n), float(v)) for n, v in (p.split(":") for p in line.get_attribute("data-points").split())]


def test_400_task_report_opens_fast_and_its_links_open_sections(big_run, browser):
    rundir, page = big_run
    summary = summarise(rundir.path)
    text = page.read_text()
    assert "src=" not in text and set(re.findall(r'href="(.)', text)) == {"#"}  # nothing to fetch

    start = time.monotonic()
    browser.get(page.as_uri())
    assert time.monotonic() - start < 5.0

    assert browser.find_element("id", "score").text == f"{summary.score:.3f}"
    assert browser.find_element("id", "solved").text == str(summary.solved) and summary.solved > 0
    assert browser.find_element("id", "samples").text == str(summary.samples)

    # The chart: one pass@n and one score line per epoch, and the all-epochs line; values as computed.
    for kind, attr in (("pass-at-n", "pass_at_n"), ("score-at-n", "score_at_n")):
        lines = browser.find_elements("css selector", f"#curves polyline.{kind}")
        assert [line.get_attribute("data-epoch") for line in lines] == ["0", "1", "all"]
        for line, curve in zip(lines, summary.curves):
            assert _points(line) == [(n, pytest.approx(v, abs=1e-5)) for n, v in zip(curve.n, getattr(curve, attr))]
    assert [c.n for c in summary.curves] == [[1, 2, 4, 8], [1, 2], [1, 2, 4, 8, 10]]

    # The table: every task once, in order, with its numbers; sections closed and not yet built.
    rows = browser.find_elements("css selector", "#tasks tr.task-row")
    assert [r.get_attribute("data-task") for r in rows] == [r.task_id for r in summary.rows]
    assert [r.text.split() for r in rows[:3]] == [
        [r.task_id, r.status, f"{r.score:g}", f"{r.best_train_accuracy:.0%}", str(r.candidates), str(r.epochs)]
        for r in summary.rows[:3]]
    assert browser.execute_script("return document.querySelectorAll('details[open]').length") == 0
    assert browser.find_elements("css selector", "section.task svg.grid") == []

    # Clicking a task far down the table opens its section and brings it into view.
    pick = summary.rows[350]
    row = rows[350]
    browser.execute_script("arguments[0].scrollIntoView()", row)
    row.find_element("tag name", "a").click()
    section = browser.find_element("id", f"task-{pick.task_id}")
    assert section.find_element("tag name", "details").get_attribute("open") is not None
    assert browser.execute_script("return location.hash") == f"#task-{pick.task_id}"
    top = browser.execute_script("return arguments[0].getBoundingClientRect().top", section)
    assert 0 <= top < browser.execute_script("return window.innerHeight")
    grids = section.find_elements("css selector", "svg.grid")
    task = next(t for t in rundir.tasks() if t.id == pick.task_id)
    assert len(grids) == 2 * len(task.train) + 4 * len(task.test)
    assert all(g.is_displayed() for g in grids[:2])
    assert browser.execute_script("return document.querySelectorAll('details[open]').length") == 1
