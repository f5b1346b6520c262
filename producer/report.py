"""`report.html`: one self-contained page per run for a person to look at what the programs did.

At the top, the run's summary (`producer.summary`): settings, score, tasks solved, samples, wall
time and time per stage, per-epoch counts, a chart of pass@n and the two-attempt score against n
(`producer.charts`), and a table of every task linking to its section. Below, one collapsed
section per task (`<details>`; a link to `#task-ID` opens it): grids as inline SVG in the ARC
palette (one path per colour, so a 400-task page stays light), cells where an attempt differs
from the expected output framed, the programs behind the attempts highlighted with Pygments
(inline styles). No network: the only links are fragments of the page itself. Everything comes
from the run directory, read one task at a time.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from arcsynth.common.models import Candidate, Task
from arcsynth.common.records import TaskRecord
from arcsynth.producer.charts import curves_svg
from arcsynth.producer.run_files import write_text_atomic
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.summary import EpochTotals, RunSummary, Summariser, TaskRow, iter_run

ARC_PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
               "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
CELL = 14
MISMATCH = "#FF00FF"
GAP = "#444444"

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin-bottom:4px} section.task{border-top:1px solid #ccc;margin-top:6px;padding-top:4px}
section.task h2{display:inline;font-size:18px} summary{cursor:pointer}
table.kv td{padding:2px 10px 2px 0;vertical-align:top;overflow-wrap:anywhere}
table.kv td:first-child{white-space:nowrap;color:#555} table.counts{border-collapse:collapse}
table.counts td,table.counts th{border:1px solid #ccc;padding:2px 8px;text-align:right}
table.counts td:first-child,table.counts th:first-child{text-align:left}
.pairs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.pair{display:flex;gap:6px;align-items:center;background:#fff;padding:6px;border:1px solid #ddd}
figure{margin:0;text-align:center} figcaption{font-size:12px;color:#555}
svg.grid{display:block;background:#444} .ok{color:#1a7f37} .bad{color:#b42318}
.program{background:#fff;border:1px solid #ddd;padding:4px 8px;overflow-x:auto;font-size:12px}
"""

# A task's body waits, unparsed, in a <script type="text/html"> until its <details> opens: a
# 400-task page parses 400 summaries, not 50,000 SVG elements. A link to `#task-ID` opens the
# section (filling it at once) before the browser scrolls to it.
SCRIPT = """
function fillTask(d){var t=d.querySelector('script.task-body');if(t){t.insertAdjacentHTML('afterend',t.textContent);t.remove()}}
function openTask(id){var s=document.getElementById(id);if(!s)return null;var d=s.querySelector('details');
if(d){fillTask(d);d.open=true}return s}
document.addEventListener('toggle',function(e){if(e.target.open)fillTask(e.target)},true);
document.addEventListener('click',function(e){var a=e.target.closest&&e.target.closest('a[href^="#task-"]');
if(a)openTask(decodeURIComponent(a.getAttribute('href').slice(1)))});
window.addEventListener('hashchange',function(){var s=openTask(decodeURIComponent(location.hash.slice(1)));
if(s)s.scrollIntoView()});
if(location.hash){var s0=openTask(decodeURIComponent(location.hash.slice(1)));if(s0)s0.scrollIntoView()}
"""


def grid_svg(grid: list[list[int]], expected: list[list[int]] | None = None, label: str = "") -> str:
    """A grid as SVG; with `expected` of the same shape, mismatching cells get a frame (`rect.mismatch`).

    Cells are drawn as one path per colour (runs of a row merged), then a path of 1-pixel lines in
    the gap colour between cells: each cell shows its colour over (CELL-1)² pixels, as one rect per
    cell would, with a tenth of the elements."""
    rows, cols = len(grid), len(grid[0])
    w, h = cols * CELL, rows * CELL
    same_shape = expected is not None and len(expected) == rows and len(expected[0]) == cols
    runs: dict[int, list[str]] = {}
    for r, row in enumerate(grid):
        c = 0
        while c < cols:
            end = c
            while end + 1 < cols and row[end + 1] == row[c]:
                end += 1
            runs.setdefault(row[c], []).append(f"M{c * CELL} {r * CELL}h{(end - c + 1) * CELL}v{CELL}h-{(end - c + 1) * CELL}z")
            c = end + 1
    parts = [f'<svg class="grid" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'data-rows="{rows}" data-cols="{cols}" data-label="{html.escape(label)}" shape-rendering="crispEdges">']
    parts.extend(f'<path fill="{ARC_PALETTE[v]}" d="{"".join(d)}"/>' for v, d in sorted(runs.items()))
    gaps = [f"M{c * CELL + CELL - 1} 0h1v{h}h-1z" for c in range(cols)] + [f"M0 {r * CELL + CELL - 1}h{w}v1h-{w}z"
                                                                            for r in range(rows)]
    parts.append(f'<path fill="{GAP}" d="{"".join(gaps)}"/>')
    if same_shape:
        parts.extend(f'<rect class="mismatch" x="{c * CELL + 1}" y="{r * CELL + 1}" width="{CELL - 3}" height="{CELL - 3}" '
                     f'fill="none" stroke="{MISMATCH}" stroke-width="2"/>'
                     for r, row in enumerate(grid) for c, v in enumerate(row) if expected[r][c] != v)  # type: ignore[index]
    parts.append("</svg>")
    return "".join(parts)


def _figure(grid, caption: str, expected=None, cls: str = "") -> str:
    return (f'<figure class="{cls}">{grid_svg(grid, expected, caption)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _programs(rec: TaskRecord | None, cands: list[Candidate]) -> list[str | None]:
    """The code of the best-ranked candidate behind attempt 1 and attempt 2 of test input 0."""
    if rec is None or not rec.attempts:
        return [None, None]
    wanted = [rec.attempts[0].attempt_1, rec.attempts[0].attempt_2]
    best: list[tuple[tuple, str] | None] = [None, None]
    for c in cands:
        ex = c.execution
        if ex is None or not ex.test or ex.test[0].output is None or not c.code:
            continue
        rank = (int(ex.all_train_correct), ex.train_pixel_accuracy, -c.epoch, -c.index)
        for k, grid in enumerate(wanted):
            cur = best[k]
            if ex.test[0].output == grid and (cur is None or rank > cur[0]):
                best[k] = (rank, c.code)
    return [b[1] if b else None for b in best]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _task_section(task: Task, rec: TaskRecord | None, row: TaskRow, programs: list[str | None]) -> str:
    tid = html.escape(task.id)
    score_txt = "" if row.score is None else f' · score <span class="task-score">{row.score:g}</span>'
    head = (f'<section class="task" id="task-{tid}" data-task="{tid}"><details><summary>'
            f"<h2>{tid}</h2> <small>({row.status}{score_txt} · {row.candidates} candidates)</small></summary>"
            '<script type="text/html" class="task-body">')
    out = []
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
    body = "\n".join(out).replace("</script", "<\\/script")  # never in escaped text; kept out of the markup anyway
    return head + body + "</script></details></section>"


def _totals_table(title: str, table_id: str, key: str, rows: list[tuple[str, str, EpochTotals]]) -> list[str]:
    """A table of candidate counts, one row per (row attributes, first cell, totals)."""
    out = [f'<h3>{title}</h3><table class="counts" id="{table_id}"><tr><th>{key}</th><th>candidates</th>'
           "<th>valid</th><th>all train correct</th><th>tasks with a test-correct program</th></tr>"]
    out += [f"<tr {attrs}><td>{first}</td><td>{t.candidates}</td><td>{t.valid}</td>"
            f"<td>{t.train_correct}</td><td>{t.solved}</td></tr>" for attrs, first, t in rows]
    return [*out, "</table>"]


def _seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _summary(s: RunSummary) -> str:
    config = s.config
    finished = ", ".join(f"{v} {k}" for k, v in sorted(s.statuses.items()))
    ft = s.times
    finetune = ("none" if not ft.finetunes else f"{_seconds(ft.finetune_s)} over {ft.finetunes} adapters"
                + ("" if ft.finetunes_timed == ft.finetunes else f" ({ft.finetunes_timed} with a reachable manifest)"))
    rows = [("dataset", html.escape(config.dataset)), ("model", html.escape(config.model)), ("tasks", str(s.tasks)),
            ("finished", html.escape(finished)), ("sampling", html.escape(config.sampling.model_dump_json())),
            ("search and learn", html.escape(config.learn.model_dump_json(exclude={"lora", "train"}))),
            ("adapter", html.escape(config.adapter or "(base model)"))]
    if s.score is not None:
        rows += [("score", f'<b id="score">{s.score:.3f}</b>'),
                 ("tasks solved", f'<span id="solved">{s.solved}</span> of {s.tasks}')]
    rows += [("samples", f'<span id="samples">{s.samples}</span> ({s.samples_per_task:.1f} per task)'),
             ("wall time", _seconds(s.wall_s)),
             ("time per stage", f"sampling {_seconds(ft.sample_s)} · execution {_seconds(ft.execute_s)} · "
                                f"fine-tuning {finetune} (summed worker time)")]
    out = ['<section id="summary"><table class="kv">']
    out += [f'<tr><td>{k}</td><td>{v}</td></tr>' for k, v in rows]
    out.append("</table>")
    if s.per_epoch:
        out += _totals_table("Per epoch", "epochs", "epoch",
                             [(f'class="run-epoch" data-epoch="{e}"', str(e), t) for e, t in s.per_epoch.items()])
    if s.per_model:
        out += _totals_table("Per model", "models", "model",
                             [('class="run-model"', html.escape(m), t) for m, t in s.per_model.items()])
    out.append("<h3>pass@n and two-attempt score against n</h3>" + curves_svg(s.curves))
    out.append('<h3>Tasks</h3><table class="counts" id="tasks"><tr><th>task</th><th>status</th><th>score</th>'
               "<th>best train accuracy</th><th>candidates</th><th>epochs</th></tr>")
    for r in s.rows:
        score = "-" if r.score is None else f"{r.score:g}"
        out.append(f'<tr class="task-row" data-task="{html.escape(r.task_id)}"><td><a href="#task-{quote(r.task_id)}">'
                   f"{html.escape(r.task_id)}</a></td><td>{r.status}</td><td>{score}</td>"
                   f"<td>{_pct(r.best_train_accuracy)}</td><td>{r.candidates}</td><td>{r.epochs}</td></tr>")
    out.append("</table></section>")
    return "\n".join(out)


def write_report(rundir: RunDir) -> Path:
    """Write `report.html` into the run directory (atomically) and return its path. Reads only: a
    torn last line is skipped, not cut off (it may be a live producer's write in progress)."""
    rundir.check_files()
    config = rundir.config()
    summariser = Summariser(rundir)
    sections = []
    for task, rec, cands in iter_run(rundir):
        row = summariser.add(task, rec, cands)
        sections.append(_task_section(task, rec, row, _programs(rec, cands)))
    summary = summariser.finish()
    title = html.escape(config.run_id)
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>arcsynth {title}</title>'
            f"<style>{STYLE}</style></head><body><h1>arcsynth run {title}</h1>\n{_summary(summary)}\n"
            + "\n".join(sections) + f"<script>{SCRIPT}</script></body></html>")
    path = rundir.path / "report.html"
    write_text_atomic(path, page)
    return path
