"""`arcsynth export RUN --out DIR`: a run's learning data, as chat conversations for offline training.

Two kinds of example, one record each (`ExportRecord`), in TRL's conversational prompt-completion
form (`prompt`: chat messages, `completion`: one assistant message), so `SFTTrainer` trains on
it as it is, with the loss on the completion only:

- `relabelled`: hindsight relabelling (`common.relabel`) of every task's candidates, by its own
  rules (programs that ran cleanly and are not no-ops, one per distinct behaviour, best train
  accuracy first); the prompt shows the task's inputs with the program's own outputs.
- `refinement`: every executed candidate with a `parent` (hard-coded answers aside): the prompt is
  the refinement turn (`common.formats.refinement_messages`) showing the parent program (the first
  of its behaviour, as the sampler showed it) and what it did on each train pair, the completion is
  the correction. Both programs' train accuracies are kept, so a consumer can keep only
  corrections that improved (`train_accuracy > parent_train_accuracy`).

Both are in the run's prompt format (`run.json`'s `prompt_format`), as its fine-tunes train: chat
messages, or for a `base` run plain text (TRL's prompt-completion form: `prompt` the whole prompt,
`completion` the program's text; the format has no refinement turn, so no refinement pairs).

`train_accuracy` is the program's train pixel accuracy on the task as given; `epoch` and
`model` are the candidate's (the run's model where candidates do not name one).

`--format jsonl` writes `DIR/examples.jsonl`; `--format hf` writes a Hugging Face `datasets`
folder (`save_to_disk`) that `datasets.load_from_disk(DIR)` reads back. Records stream to disk
one task at a time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from arcsynth.common import formats
from arcsynth.common.models import Candidate, RunConfig, Task
from arcsynth.common.relabel import is_hardcoded, relabel
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
    prompt: list[dict[str, str]] | str  # chat messages; a `base` run's plain prompt
    completion: list[dict[str, str]] | str  # one assistant message; a `base` run's plain completion


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
    """One task's relabelled examples, then its refinement pairs, in the run's prompt format (as its
    fine-tunes train)."""
    fmt = config.prompt_format
    seen: set[str] = set()
    for c in sorted(cands, key=lambda c: (-_accuracy(c), c.epoch, c.index)):  # relabel's own order
        examples = relabel(task, [c], fmt=fmt)
        if not examples or c.execution is None or c.execution.fingerprint in seen:
            continue
        seen.add(c.execution.fingerprint)
        shown = examples[0]
        yield ExportRecord(kind="relabelled", task_id=task.id, epoch=c.epoch, model=_model(c, config),
                           train_accuracy=_accuracy(c),
                           prompt=shown.prompt if fmt == "base" else shown.messages,  # type: ignore[arg-type]
                           completion=shown.completion if fmt == "base" else
                           [{"role": "assistant", "content": shown.completion}])
    if fmt == "base":
        return
    parents: dict[str, Candidate] = {}
    for c in cands:  # the first program of each behaviour: the one a refinement prompt showed (policy)
        if c.code and c.execution is not None and c.execution.fingerprint:
            parents.setdefault(c.execution.fingerprint, c)
    pairs: set[tuple[str, str]] = set()
    for c in cands:
        if not c.parent or not c.code or c.execution is None or is_hardcoded(c.code, task):
            continue  # a program holding a train output is never learned from
        parent = parents.get(c.parent)
        if parent is None or (c.parent, c.execution.fingerprint) in pairs:
            continue
        pairs.add((c.parent, c.execution.fingerprint))
        yield ExportRecord(kind="refinement", task_id=task.id, epoch=c.epoch, model=_model(c, config),
                           train_accuracy=_accuracy(c), parent_train_accuracy=_accuracy(parent),
                           prompt=formats.refinement_messages(fmt, task, parent.code or "", parent.execution),  # type: ignore[arg-type]
                           completion=[{"role": "assistant", "content": formats.completion_text(fmt, c.code)}])


def learning_records(run: Path | str) -> Iterator[ExportRecord]:
    """Every learning record of a run directory, task by task in the run's order."""
    rundir = open_run(run)
    config = rundir.config()
    for task, _, cands in iter_run(rundir):
        yield from task_records(task, cands, config)


def hf_features(plain: bool = False):
    """The `datasets` schema of an export (stable even when a run has no refinement at all); `plain`:
    a `base` run's, whose prompt and completion are strings."""
    from datasets import Features, Value

    text = Value("string") if plain else [{"role": Value("string"), "content": Value("string")}]
    return Features({"kind": Value("string"), "task_id": Value("string"), "epoch": Value("int64"),
                     "model": Value("string"), "train_accuracy": Value("float64"),
                     "parent_train_accuracy": Value("float64"), "prompt": text, "completion": text})


def _save_hf(jsonl: Path, out: Path, cache: Path, empty: bool, plain: bool) -> None:
    """examples.jsonl -> a `datasets` folder at `out`, quietly (no progress bars on the command's output)."""
    try:
        import datasets
    except ImportError:
        raise ExportError("option --format hf: needs the `datasets` package (pip install datasets)") from None
    quiet = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        features = hf_features(plain)
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
    plain = open_run(run).config().prompt_format == "base"  # checks the run before anything is written
    records = learning_records(run)
    counts = {"relabelled": 0, "refinement": 0}
    with tempfile.TemporaryDirectory(prefix="arcsynth-export-") as tmp:
        jsonl = Path(tmp) / "examples.jsonl"
        with open(jsonl, "w") as f:
            for rec in records:
                counts[rec.kind] += 1
                f.write(rec.model_dump_json() + "\n")
        out.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":  # copied where the temporary folder is on another filesystem, then renamed
            part = out / ".examples.jsonl.part"
            try:
                shutil.move(jsonl, part)
                part.replace(out / "examples.jsonl")
            except OSError as exc:
                part.unlink(missing_ok=True)
                raise ExportError(f"option --out: cannot write {out / 'examples.jsonl'}: {exc.strerror or exc}") from None
        else:
            try:
                _save_hf(jsonl, out, Path(tmp) / "cache", empty=not any(counts.values()), plain=plain)
            except BaseException as exc:  # out was new or empty: leave it so, not half a dataset
                for left in out.iterdir():
                    shutil.rmtree(left) if left.is_dir() and not left.is_symlink() else left.unlink()
                if isinstance(exc, OSError):
                    raise ExportError(f"option --out: cannot write a datasets folder in {out}: {exc.strerror or exc}") from None
                raise
    return ExportResult(out=str(out), format=fmt, relabelled=counts["relabelled"], refinements=counts["refinement"])  # type: ignore[arg-type]
