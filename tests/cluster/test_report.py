"""`arcsynth report`: a self-contained HTML page, checked in headless Chromium as a person sees it."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

from PIL import Image

from arcsynth.common.data import load_tasks
from arcsynth.common.models import RunConfig, SamplingConfig
from arcsynth.producer.report import ARC_PALETTE, CELL
from tests.support import run_in_process

TASKS = ["6150a2bd", "74dd1130", "007bbfb7"]  # flip solves the first, transpose the second, nothing the third


def _hex(rgb) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb[:3])


def test_report_renders_grids_attempts_programs_and_the_score(replay_cluster, browser, tmp_path):
    tasks = load_tasks("arc-agi-1/training", task_ids=TASKS)
    sampling = SamplingConfig(n=2)
    config = RunConfig(run_id="report", dataset="arc-agi-1/training", task_ids=TASKS, model=replay_cluster.model,
                       sampling=sampling, timeout_s=120)
    out = tmp_path / "run"
    run_in_process(replay_cluster.app, tasks, config, out)
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "report", str(out)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)  # works offline
    assert r.returncode == 0, r.stderr
    page = out / "report.html"
    assert r.stdout.strip() == str(page)
    text = page.read_text()
    assert "src=" not in text and set(re.findall(r'href="(.)', text)) == {"#"}  # nothing to fetch: links are in-page
    scores = json.loads((out / "score.json").read_text())

    browser.get(page.as_uri())
    assert browser.find_element("id", "score").text == f"{scores['score']:.3f}" == "0.667"
    # The summary: pass@n over the replayed programs (one of two right for two tasks), every task in the table.
    lines = browser.find_elements("css selector", "#curves polyline.pass-at-n")
    assert [(x.get_attribute("data-epoch"), x.get_attribute("data-points")) for x in lines] == [("0", "1:0.333333 2:0.666667")]
    assert [r.get_attribute("data-task") for r in browser.find_elements("css selector", "#tasks tr.task-row")] == TASKS
    for task in tasks:
        browser.find_element("css selector", f'#tasks a[href="#task-{task.id}"]').click()  # opens the section
        section = browser.find_element("css selector", f'section[data-task="{task.id}"]')
        assert float(section.find_element("css selector", ".task-score").text) == scores["tasks"][task.id]
        grids = section.find_elements("css selector", "svg.grid")
        assert len(grids) == 2 * len(task.train) + 4 * len(task.test)  # input, expected, two attempts
        for g in grids:
            rows, cols = int(g.get_attribute("data-rows")), int(g.get_attribute("data-cols"))
            assert g.is_displayed() and g.size == {"width": cols * CELL, "height": rows * CELL}
        epochs = section.find_elements("css selector", "tr.epoch")
        assert [e.text.split() for e in epochs] == [["0", "2", "2", str(int(scores["tasks"][task.id]))]]

    # The grids are pictures in the ARC palette: every cell's centre pixel has its colour.
    task = tasks[0]
    section = browser.find_element("css selector", f'section[data-task="{task.id}"]')
    svg = section.find_elements("css selector", "svg.grid")[0]
    browser.execute_script("arguments[0].scrollIntoView()", svg)
    shot = Image.open(io.BytesIO(svg.screenshot_as_png)).convert("RGB")
    grid = task.train[0].input
    seen = [[_hex(shot.getpixel((c * CELL + CELL // 2, r * CELL + CELL // 2))) for c in range(len(grid[0]))]
            for r in range(len(grid))]
    assert seen == [[ARC_PALETTE[v] for v in row] for row in grid]

    # Mismatching cells are marked on the wrong attempt only.
    task = tasks[1]
    section = browser.find_element("css selector", f'section[data-task="{task.id}"]')
    right = section.find_element("css selector", "figure.attempt-1 svg")
    wrong = section.find_element("css selector", "figure.attempt-2 svg")
    expected, given = task.test[0].output, task.test[0].input
    assert [list(r) for r in zip(*given)] == expected  # transpose is right for this task, flip is not
    flipped = [row[::-1] for row in given[::-1]]
    differing = sum(a != b for ra, rb in zip(flipped, expected) for a, b in zip(ra, rb))
    assert right.find_elements("css selector", "rect.mismatch") == []
    assert len(wrong.find_elements("css selector", "rect.mismatch")) == differing > 0

    # The chosen programs, highlighted.
    programs = section.find_elements("css selector", ".program")
    assert "return grid.T" in programs[0].text
    assert programs[0].find_elements("css selector", "span[style*='color']")
