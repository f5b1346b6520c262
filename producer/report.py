"""`report.html`: one self-contained page per run for a person to look at what the programs did.

Grids are inline SVG in the standard ARC palette (so they render as pictures with no assets);
cells where an attempt differs from the expected output carry a red frame. Programs are
highlighted with Pygments (inline styles). Everything comes from the run directory.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from arcsynth.common.models import Task, TaskRecord
from arcsynth.common.scoring import score_task
from arcsynth.producer.rundir import RunDir
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

ARC_PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
               "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
CELL = 14
MISMATCH = "#FF00FF"

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin-bottom:4px} h2{margin-top:36px;border-top:1px solid #ccc;padding-top:12px}
table.kv td{padding:2px 10px 2px 0;vertical-align:top} table.counts{border-collapse:collapse}
table.counts td,table.counts th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.pairs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.pair{display:flex;gap:6px;align-items:center;background:#fff;padding:6px;border:1px solid #ddd}
figure{margin:0;text-align:center} figcaption{font-size:12px;color:#555}
svg.grid{display:block;background:#444} .ok{color:#1a7f37} .bad{color:#b42318}
.program{background:#fff;border:1px solid #ddd;padding:4px 8px;overflow-x:auto;font-size:12px}
"""


def grid_svg(grid: list[list[int]], expected: list[list[int]] | None = None, label: str = "") -> str:
    """A grid as SVG; with `expected` of the same shape, mismatching cells get a frame."""
    rows, cols = len(grid), len(grid[0])
    w, h = cols * CELL, rows * CELL
    same_shape = expected is not None and len(expected) == rows and len(expected[0]) == cols
    parts = [f'<svg class="grid" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'data-rows="{rows}" data-cols="{cols}" '
             f'data-label="{html.escape(label)}">']
    marks = []
    for r, row in enumerate(grid):
        for c, v in enumerate(row):
            parts.append(f'<rect x="{c * CELL}" y="{r * CELL}" width="{CELL - 1}" height="{CELL - 1}" '
                         f'fill="{ARC_PALETTE[v]}"/>')
            if same_shape and expected[r][c] != v:  # type: ignore[index]
                marks.append(f'<rect class="mismatch" x="{c * CELL + 1}" y="{r * CELL + 1}" width="{CELL - 3}" '
                             f'height="{CELL - 3}" fill="none" stroke="{MISMATCH}" stroke-width="2"/>')
    parts.extend(marks)
    parts.append("</svg>")
    return "".join(parts)


def _figure(grid, caption: str, expected=None, cls: str = "") -> str:
    return (f'<figure class="{cls}">{grid_svg(grid, expected, caption)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _programs(rundir: RunDir, records: dict[str, TaskRecord]) -> dict[str, list[str | None]]:
    """For each task, the code of the best-ranked candidate behind attempt 1 and attempt 2 of test input 0."""
    wanted = {tid: [a.attempt_1, a.attempt_2] for tid, r in records.items() for a in r.attempts[:1]}
    best: dict[str, list[tuple[tuple, str] | None]] = {tid: [None, None] for tid in wanted}
    for c in rundir.candidates():
        ex = c.execution
        if c.task_id not in wanted or ex is None or not ex.test or ex.test[0].output is None or not c.code:
            continue
        rank = (int(ex.all_train_correct), ex.train_pixel_accuracy, -c.epoch, -c.index)
        for k, grid in enumerate(wanted[c.task_id]):
            cur = best[c.task_id][k]
            if ex.test[0].output == grid and (cur is None or rank > cur[0]):
                best[c.task_id][k] = (rank, c.code)
    return {tid: [b[1] if b else None for b in pair] for tid, pair in best.items()}


def _task_section(task: Task, rec: TaskRecord | None, programs: list[str | None]) -> str:
    out = [f'<section class="task" id="task-{html.escape(task.id)}" data-task="{html.escape(task.id)}">']
    status = rec.status if rec else "unfinished"
    score = score_task(task, rec.attempts) if rec and task.has_solutions() else None
    score_txt = "" if score is None else f' · score <span class="task-score">{score:g}</span>'
    out.append(f"<h2>{html.escape(task.id)} <small>({status}{score_txt})</small></h2>")
    if rec and rec.reason:
        out.append(f"<p>{html.escape(rec.reason)}</p>")
    out.append('<h3>Train</h3><div class="pairs">')
    for i, pair in enumerate(task.train):
        out.append('<div class="pair train">' + _figure(pair.input, f"train {i} input") + "→"
                   + _figure(pair.output, f"train {i} output") + "</div>")
    out.append("</div><h3>Test</h3>")
    for i, pair in enumerate(task.test):
        out.append('<div class="pairs"><div class="pair test">' + _figure(pair.input, f"test {i} input"))
        if pair.output is not None:
            out.append(_figure(pair.output, f"test {i} expected", cls="expected"))
        if rec and i < len(rec.attempts):
            for k, grid in enumerate((rec.attempts[i].attempt_1, rec.attempts[i].attempt_2), 1):
                verdict = "" if pair.output is None else (" ✓" if grid == pair.output else " ✗")
                out.append(_figure(grid, f"test {i} attempt {k}{verdict}", expected=pair.output, cls=f"attempt-{k}"))
        out.append("</div></div>")
    if rec and rec.per_epoch:
        out.append('<h3>Per epoch</h3><table class="counts"><tr><th>epoch</th><th>candidates</th><th>valid</th>'
                   "<th>all train correct</th></tr>")
        for epoch, c in sorted(rec.per_epoch.items()):
            out.append(f'<tr class="epoch" data-epoch="{epoch}"><td>{epoch}</td><td>{c.candidates}</td>'
                       f"<td>{c.valid}</td><td>{c.train_correct}</td></tr>")
        out.append("</table>")
    formatter = HtmlFormatter(noclasses=True, nowrap=False)
    for k, code in enumerate(programs, 1):
        if code:
            out.append(f'<h3>Program behind attempt {k}</h3><div class="program">'
                       f"{highlight(code, PythonLexer(), formatter)}</div>")
    out.append("</section>")
    return "\n".join(out)


def write_report(rundir: RunDir) -> Path:
    rundir.repair()
    config = rundir.config()
    tasks = rundir.tasks()
    records = rundir.records()
    programs = _programs(rundir, records)
    score_file = rundir.path / "score.json"
    scores = json.loads(score_file.read_text()) if score_file.exists() else None
    statuses = {s: sum(r.status == s for r in records.values()) for s in ("done", "failed", "skipped", "cancelled")}
    head = [f"<h1>arcsynth run {html.escape(config.run_id)}</h1>", '<table class="kv">']
    rows = [("dataset", config.dataset), ("model", config.model), ("tasks", str(len(tasks))),
            ("finished", ", ".join(f"{v} {k}" for k, v in statuses.items())),
            ("sampling", config.sampling.model_dump_json()),
            ("search and learn", config.learn.model_dump_json(exclude={"lora", "train"})),
            ("adapter", config.adapter or "(base model)")]
    for k, v in rows:
        head.append(f"<tr><td>{k}</td><td>{html.escape(v)}</td></tr>")
    if scores is not None:
        head.append(f'<tr><td>score</td><td><b id="score">{scores["score"]:.3f}</b></td></tr>')
    head.append("</table>")
    body = [_task_section(t, records.get(t.id), programs.get(t.id, [None, None])) for t in tasks]
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>arcsynth {html.escape(config.run_id)}</title>'
            f"<style>{STYLE}</style></head><body>" + "\n".join(head + body) + "</body></html>")
    path = rundir.path / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path
