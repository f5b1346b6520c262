"""`arcsynth export RUN --out DIR`: a run's learning data, as chat conversations for offline training.

Two kinds of example, one record each (`ExportRecord`), in TRL's conversational prompt-completion
form (`prompt`: chat messages, `completion`: one assistant message), so `SFTTrainer` trains on
it as it is, with the loss on the completion only:

- `relabelled`: hindsight relabelling (`common.relabel`) of every task's candidates, by its own
  rules (programs that ran cleanly and are not no-ops, one per distinct behaviour, best train
  accuracy first); the prompt shows the task's inputs with the program's own outputs.
- `refinement`: every executed candidate with a `parent`: the prompt is the refinement turn
  (`common.prompts.refinement_messages`) showing the parent program and what it did on each train
  pair, the completion is the correction. Both programs' train accuracies are kept, so a
  consumer can keep only corrections that improved (`train_accuracy > parent_train_accuracy`).

`train_accuracy` is the program's train pixel accuracy on the task as given; `epoch` and
`model` are the candidate's (the run's model where candidates do not name one).

`--format jsonl` writes `DIR/examples.jsonl`; `--format hf` writes a Hugging Face `datasets`
folder (`save_to_disk`) that `datasets.load_from_disk(DIR)` reads back. Records stream to disk
one task at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from arcsynth.common.models import Candidate, RunConfig, Task
from arcsynth.common.prompts import format_completion, refinement_messages
from arcsynth.common.relabel import relabel
from arcsynth.producer.outputs import out_dir_problem
from arcsynth.producer.summary import RunReadError, iter_run, open_run

ExportFormat = Literal["jsonl", "hf"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "hf")


class ExportError(RunReadError):
    """An export that cannot be written (the output folder is not empty, a format is unknown)."""


class ExportRecord(BaseModel):
    kind: Literal["relabelled", "refinement"]
    task_id: str
    epoch: int
    model: str
    train_accuracy: float
    parent_train_accuracy: float | None = None  # refinement: the accuracy of the program it corrects
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]  # one assistant message


class ExportResult(BaseModel):
    out: str
    format: ExportFormat
    relabelled: int
    refinements: int


def _model(c: Candidate, config: RunConfig) -> str:
    return getattr(c, "model", "") or config.model


def _accuracy(c: Candidate) -> float:
    return c.execution.train_pixel_accuracy if c.execution is not None else 0.0


def task_records(task: Task, cands: list[Candidate], config: RunConfig) -> Iterator[ExportRecord]:
    """One task's relabelled examples, then its refinement pairs."""
    seen: set[str] = set()
    for c in sorted(cands, key=lambda c: (-_accuracy(c), c.epoch, c.index)):  # relabel's own order
        examples = relabel(task, [c])
        if not examples or c.execution is None or c.execution.fingerprint in seen:
            continue
        seen.add(c.execution.fingerprint)
        yield ExportRecord(kind="relabelled", task_id=task.id, epoch=c.epoch, model=_model(c, config),
                           train_accuracy=_accuracy(c), prompt=examples[0].messages,
                           completion=[{"role": "assistant", "content": examples[0].completion}])
    parents: dict[tuple[int, str], Candidate] = {}
    for c in cands:
        if c.code and c.execution is not None and c.execution.fingerprint:
            parents.setdefault((c.epoch, c.execution.fingerprint), c)
    pairs: set[tuple[str, str]] = set()
    for c in cands:
        if not c.parent or not c.code or c.execution is None:
            continue
        parent = parents.get((c.epoch, c.parent)) or next(
            (p for (_, fp), p in parents.items() if fp == c.parent), None)
        if parent is None or (c.parent, c.execution.fingerprint) in pairs:
            continue
        pairs.add((c.parent, c.execution.fingerprint))
        yield ExportRecord(kind="refinement", task_id=task.id, epoch=c.epoch, model=_model(c, config),
                           train_accuracy=_accuracy(c), parent_train_accuracy=_accuracy(parent),
                           prompt=refinement_messages(task, parent.code or "", parent.execution),  # type: ignore[arg-type]
                           completion=[{"role": "assistant", "content": format_completion(c.code)}])


def learning_records(run: Path | str) -> Iterator[ExportRecord]:
    """Every learning record of a run directory, task by task in the run's order."""
    rundir = open_run(run)
    config = rundir.config()
    for task, _, cands in iter_run(rundir):
        yield from task_records(task, cands, config)


def hf_features():
    """The `datasets` schema of an export (stable even when a run has no refinement at all)."""
    from datasets import Features, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features({"kind": Value("string"), "task_id": Value("string"), "epoch": Value("int64"),
                     "model": Value("string"), "train_accuracy": Value("float64"),
                     "parent_train_accuracy": Value("float64"), "prompt": [message], "completion": [message]})


def _save_hf(jsonl: Path, out: Path, cache: Path, empty: bool) -> None:
    """examples.jsonl -> a `datasets` folder at `out`, quietly (no progress bars on the command's output)."""
    try:
        import datasets
    except ImportError:
        raise ExportError("option --format hf: needs the `datasets` package (pip install datasets)") from None
    quiet = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        features = hf_features()
        if empty:  # from_json finds no split in an empty file; one shard, or load_from_disk finds none
            datasets.Dataset.from_dict({k: [] for k in features}, features=features).save_to_disk(str(out), num_shards=1)
        else:
            datasets.Dataset.from_json(str(jsonl), features=features, cache_dir=str(cache)).save_to_disk(str(out))
    finally:
        if quiet:
            datasets.enable_progress_bars()


def export_run(run: Path | str, out: Path, fmt: str = "jsonl") -> ExportResult:
    """Write the run's learning data into `out` (a new or empty folder) as JSONL or a `datasets` folder."""
    if fmt not in FORMATS:
        raise ExportError(f"option --format: {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    problem = out_dir_problem(out)  # not empty, or cannot be made: checked by making it and removing it
    if problem:
        raise ExportError(f"option --out: {problem}")
    records = learning_records(run)  # checks the run before anything is written
    counts = {"relabelled": 0, "refinement": 0}
    with tempfile.TemporaryDirectory(prefix="arcsynth-export-") as tmp:
        jsonl = Path(tmp) / "examples.jsonl"
        with open(jsonl, "w") as f:
            for rec in records:
                counts[rec.kind] += 1
                f.write(rec.model_dump_json() + "\n")
        out.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":
            jsonl.replace(out / "examples.jsonl")
        else:
            _save_hf(jsonl, out, Path(tmp) / "cache", empty=not any(counts.values()))
    return ExportResult(out=str(out), format=fmt, relabelled=counts["relabelled"], refinements=counts["refinement"])  # type: ignore[arg-type]
