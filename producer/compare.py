"""`arcsynth compare RUN RUN ...`: runs side by side, on the tasks they have in common.

Every number is computed over the common tasks only (the intersection of the runs' task ids),
so runs over different task sets are compared fairly; the comparison says how many tasks that
is. Wall time is the exception: it is each whole run's, as the run files give it. Fine-tune time
is the summed training time of the adapters the common tasks' candidates were sampled through.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from arcsynth.common.models import RunConfig, SamplingConfig
from arcsynth.common.text import escape
from arcsynth.producer.charts import curves_svg
from arcsynth.producer.run_files import write_text_atomic
from arcsynth.producer.summary import RunReadError, RunSummary, flat_settings, open_run, summarise

IDENTITY = ("run_id", "dataset", "tasks", "model")  # what a run is, not how it was run


class CompareError(RunReadError):
    """Runs that cannot be compared (too few, or no task in common)."""


class OnlySolved(BaseModel):
    """Tasks that run `solved_by` solved and run `not_by` did not."""

    solved_by: str
    not_by: str
    tasks: list[str]


class Comparison(BaseModel):
    names: list[str]  # one per run: its run id, or its folder when ids repeat
    totals: list[int]  # each run's own task count
    common: list[str]  # the task ids every run has, in the first run's order
    runs: list[RunSummary]  # each over the common tasks only
    only_solved: list[OnlySolved]  # every ordered pair of runs; empty when test outputs are unknown
    settings: dict[str, list[str]] = {}  # flattened settings whose values differ between the runs (one value per run)


def differing_settings(configs: Sequence[RunConfig]) -> dict[str, list[str]]:
    """The flattened settings (`flat_settings`) whose values are not the same in every config, run id aside."""
    flats = [flat_settings(c) for c in configs]
    keys = sorted(set().union(*flats) - {"run_id"})
    return {k: [f.get(k, "-") for f in flats] for k in keys if len({f.get(k, "-") for f in flats}) > 1}


def notable_settings(config: RunConfig) -> dict[str, str]:
    """The model and every flattened setting that differs from a default run's, so a list of runs reads like a
    lab notebook (`arcsynth runs`): e.g. {"model": "smollm2", "sampling.n": "64", "learn.epochs": "2"}."""
    default = flat_settings(RunConfig(run_id="", dataset="", task_ids=[], model="", sampling=SamplingConfig()))
    mine = flat_settings(config)
    return {"model": config.model} | {k: v for k, v in mine.items() if k not in IDENTITY and default.get(k) != v}


def _names(runs: Sequence[RunSummary]) -> list[str]:
    ids = [r.config.run_id for r in runs]
    if len(set(ids)) == len(ids):
        return ids
    return [f"{Path(r.path).name} ({r.config.run_id})" for r in runs]


def compare_runs(paths: Sequence[Path | str]) -> Comparison:
    """Summarise each run directory over the tasks all of them have; CompareError/RunReadError on bad input."""
    if len(paths) < 2:
        raise CompareError(f"compare: needs two runs or more, got {len(paths)}")
    rundirs = [open_run(p) for p in paths]
    task_lists = [rd.config().task_ids for rd in rundirs]
    shared = set(task_lists[0]).intersection(*task_lists[1:])
    if not shared:
        raise CompareError(f"{rundirs[1].path / 'run.json'}: field task_ids: no task in common with {rundirs[0].path}")
    runs = [summarise(rd, shared) for rd in rundirs]
    names = _names(runs)
    solved = [None if r.score is None else {row.task_id for row in r.rows if row.score == 1.0} for r in runs]
    only = [OnlySolved(solved_by=names[i], not_by=names[j], tasks=[t for t in task_lists[0] if t in si - sj])
            for i, si in enumerate(solved) for j, sj in enumerate(solved)
            if i != j and si is not None and sj is not None]
    return Comparison(names=names, totals=[len(t) for t in task_lists],
                      common=[t for t in task_lists[0] if t in shared], runs=runs, only_solved=only,
                      settings=differing_settings([rd.config() for rd in rundirs]))


def _seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


COLUMNS = ("run", "score", "solved", "samples/task", "wall time", "fine-tune time", "solved/1k samples")


def table_rows(c: Comparison) -> list[tuple[str, ...]]:
    """One row of strings per run, in `COLUMNS` order."""
    rows = []
    for name, r in zip(c.names, c.runs):
        per_k = r.solved_per_1k_samples
        rows.append((name, "-" if r.score is None else f"{r.score:.3f}", "-" if r.solved is None else str(r.solved),
                     f"{r.samples_per_task:.1f}", _seconds(r.wall_s), _seconds(r.times.finetune_s),
                     "-" if per_k is None else f"{per_k:.2f}"))
    return rows


def comparison_text(c: Comparison) -> str:
    """What the command prints: the common-task count, the table, and the tasks only one run solved."""
    totals = ", ".join(f"{n} has {t}" for n, t in zip(c.names, c.totals))
    lines = [f"compared on {len(c.common)} common tasks ({totals})"]
    rows = [COLUMNS, *table_rows(c)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    if c.settings:
        lines.append("settings that differ: " + "; ".join(f"{k} {' / '.join(v)}" for k, v in c.settings.items()))
    if not c.only_solved:
        lines.append("tasks solved: unknown (some test outputs are not known)")
    for o in c.only_solved:
        lines.append(f"solved by {o.solved_by} but not {o.not_by} ({len(o.tasks)}): {' '.join(o.tasks) or '-'}")
    return "\n".join(escape(line) for line in lines)  # task ids and run names may hold control characters


def write_compare_html(c: Comparison, path: Path) -> Path:
    """compare.html: the table, the one-run-only task lists and the runs' pass@n curves on one chart."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in COLUMNS)
    body = "".join(f'<tr class="run" data-run="{html.escape(row[0])}">' + "".join(f"<td>{html.escape(v)}</td>" for v in row)
                   + "</tr>" for row in table_rows(c))
    only = "".join(f'<li class="only" data-solved-by="{html.escape(o.solved_by)}" data-not-by="{html.escape(o.not_by)}">'
                   f"solved by <b>{html.escape(o.solved_by)}</b> but not {html.escape(o.not_by)} ({len(o.tasks)}): "
                   f'<span class="tasks">{html.escape(" ".join(o.tasks))}</span></li>' for o in c.only_solved)
    settings = "".join(f'<tr class="setting"><td>{html.escape(k)}</td>' + "".join(f"<td>{html.escape(x)}</td>" for x in v)
                       + "</tr>" for k, v in c.settings.items())
    names = "".join(f"<th>{html.escape(n)}</th>" for n in c.names)
    chart = curves_svg([r.overall for r in c.runs], names=c.names, chart_id="curves")
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>arcsynth compare</title><style>'
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>"
        f'<h1>arcsynth compare</h1><p>Compared on <b id="common">{len(c.common)}</b> common tasks '
        f"({html.escape(', '.join(f'{n} has {t}' for n, t in zip(c.names, c.totals)))}).</p>"
        f'<table id="runs"><tr>{head}</tr>{body}</table><ul>{only}</ul>'
        f'<h3>Settings that differ</h3><table id="settings"><tr><th>setting</th>{names}</tr>{settings}</table>'
        f"<h3>pass@n and two-attempt score against n, over the common tasks</h3>{chart}</body></html>")
    write_text_atomic(path, page)
    return path
