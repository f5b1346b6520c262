"""A run directory: the durable half of a run's state (the other half lives in Redis).

Files, all written through `RunDir` (the only writer of its folder):
- `run.json`: the RunConfig; `inputs.jsonl`: the tasks themselves, so a run resumes without
  its dataset; both written before the run is registered anywhere.
- `candidates.jsonl`: one line per candidate, appended as results arrive.
- `tasks.jsonl`: one TaskRecord per finished task (status, per-epoch counts, the two attempts).
- `learning.jsonl` (scope "run"): per task and epoch (and model, in a run with several), the
  training examples it gives the run's adapter, written when the task waits for it; the last line
  of a (task, epoch, model) wins.
- `submission.json`, `score.json`, `report.html`: derived, rewritten at will.

Append-only files may end in a torn line when the producer is killed mid-write; readers drop
it and `repair()` cuts it off before anything is appended again. Any other line that does not
validate makes a reader raise `RunDirError` naming the file, the line and the field; so does a
run.json that does not validate (naming the field), a file of the folder that is not a regular
file (a folder, a FIFO or a device: reading it would fail or never end), and an inputs.jsonl
whose tasks are not run.json's `task_ids` (a task repeated, unknown or missing).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from arcsynth.common.models import Attempt, Candidate, Frozen, RunConfig, Task, TrainingExample
from arcsynth.common.records import TaskRecord
from arcsynth.common.scoring import RunScore, score_run
from arcsynth.common.submission import build_submission, validate_submission_shape
from arcsynth.common.task_json import field_path
from arcsynth.common.text import show, show_path
from arcsynth.producer.run_files import RunDirError, check_writable, regular_file, write_json_atomic

APPEND_ONLY = ("candidates.jsonl", "tasks.jsonl", "learning.jsonl")
M = TypeVar("M", bound=BaseModel)


def validation_text(exc: ValidationError, whole: str | None = "the line") -> str:
    """`field F: why` for a validation error's first problem (`whole: why`, or `why`, when it has no field)."""
    err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["loc"]:
        return f"field {field_path(err['loc'])}: {msg}"
    return f"{whole}: {msg}" if whole else msg


def line_error(path: Path, lineno: int, exc: ValidationError | ValueError) -> RunDirError:
    """The error for line `lineno` of `path` that does not validate: the file, the line, the field, why."""
    if isinstance(exc, ValidationError):
        return RunDirError(f"{show_path(path)}: line {lineno}: {validation_text(exc)}")
    return RunDirError(f"{show_path(path)}: line {lineno}: not a JSON object")


def _parse(model: type[M], path: Path, lineno: int, line: str) -> M:
    try:
        return model.model_validate_json(line)
    except ValidationError as exc:
        raise line_error(path, lineno, exc) from None


class LearningRecord(Frozen):
    epoch: int
    task_id: str
    examples: list[TrainingExample]
    model: str = ""  # the model whose adapter they train (a run with several); "" for a run's one model


def ensure_empty(path: Path, what: str = "run directory") -> None:
    """Refuse a folder that already holds something (a run never writes over another)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirError(f"{what} {path} exists and is not empty")


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def candidates_file(self) -> Path:
        return self.path / "candidates.jsonl"

    @property
    def tasks_file(self) -> Path:
        return self.path / "tasks.jsonl"

    @classmethod
    def create(cls, path: Path, config: RunConfig, tasks: Sequence[Task]) -> RunDir:
        """Write run.json and inputs.jsonl into a fresh folder, all or nothing."""
        path = Path(path)
        ensure_empty(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(staging, 0o777 & ~umask)
            with open(staging / "inputs.jsonl", "w") as f:
                for t in tasks:
                    f.write(t.model_dump_json() + "\n")
            write_json_atomic(staging / "run.json", config)
            for name in APPEND_ONLY:
                (staging / name).touch()
            if path.exists():
                path.rmdir()
            os.replace(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(path)

    def problem(self) -> str | None:
        """None when the folder holds run.json and inputs.jsonl as regular files; else why it is not a run directory."""
        try:
            for name in ("run.json", "inputs.jsonl"):
                if not regular_file(self.path / name):
                    return f"{show_path(self.path / name)}: missing (not a run directory)"
        except RunDirError as exc:
            return str(exc)
        return None

    def exists(self) -> bool:
        return self.problem() is None

    def config(self) -> RunConfig:
        """run.json, validated; `RunDirError` naming the file and the field otherwise."""
        path = self.path / "run.json"
        if not regular_file(path):
            raise RunDirError(f"{show_path(path)}: missing (not a run directory)")
        try:
            return RunConfig.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise RunDirError(f"{show_path(path)}: cannot read: {exc.strerror or exc}") from None
        except ValidationError as exc:
            raise RunDirError(f"{show_path(path)}: {validation_text(exc, None)}") from None

    def tasks(self) -> list[Task]:
        return list(self.iter_tasks())

    def iter_tasks(self) -> Iterator[Task]:
        """The run's tasks in order, one at a time (a producer never needs them all at once); each of
        run.json's `task_ids` once, or `RunDirError` at the first line that repeats one or is none of them."""
        path = self.path / "inputs.jsonl"
        ids = self.config().task_ids
        wanted, seen = set(ids), set()
        for lineno, line in _lines(path):
            task = _parse(Task, path, lineno, line)
            if task.id in seen or task.id not in wanted:
                why = "repeats an earlier line's task" if task.id in seen else "is not in run.json's task_ids"
                raise RunDirError(f"{show_path(path)}: line {lineno}: field id: task {show(task.id)} {why}")
            seen.add(task.id)
            yield task
        missing = next((t for t in ids if t not in seen), None)
        if missing is not None:
            raise RunDirError(f"{show_path(path)}: task {show(missing)} of run.json's task_ids is missing")

    def check_files(self) -> None:
        """`RunDirError` when an append-only file is there but is not a regular file; changes nothing
        (readers skip a torn last line: cutting it off is for the run's one writer, `repair`)."""
        for name in APPEND_ONLY:
            regular_file(self.path / name)

    def repair(self) -> None:
        """Cut a torn last line off the append-only files (left by a producer killed mid-write)."""
        for name in APPEND_ONLY:
            p = self.path / name
            if not regular_file(p):
                p.touch()
                continue
            data = p.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(p, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)

    def records(self) -> dict[str, TaskRecord]:
        """Finished tasks; the first record of a task wins (a record is never rewritten)."""
        out: dict[str, TaskRecord] = {}
        for lineno, line in _lines(self.tasks_file):
            rec = _parse(TaskRecord, self.tasks_file, lineno, line)
            out.setdefault(rec.task_id, rec)
        return out

    def candidates(self, task_ids: set[str] | None = None) -> Iterator[Candidate]:
        """Stream candidates (of `task_ids` only, when given) without holding the file in memory."""
        for lineno, line in _lines(self.candidates_file):
            if task_ids is not None:
                try:
                    task_id = json.loads(line).get("task_id")
                except (ValueError, AttributeError) as exc:
                    raise line_error(self.candidates_file, lineno, ValueError(exc)) from None
                if task_id not in task_ids:
                    continue
            yield _parse(Candidate, self.candidates_file, lineno, line)

    def append_candidates(self, candidates: Iterable[Candidate]) -> None:
        with open(self.candidates_file, "a") as f:
            f.writelines(c.model_dump_json() + "\n" for c in candidates)

    def append_learning(self, epoch: int, task_id: str, examples: list[TrainingExample], model: str = "") -> None:
        line = LearningRecord(epoch=epoch, task_id=task_id, examples=examples, model=model).model_dump_json()
        with open(self.path / "learning.jsonl", "a") as f:
            f.write(line + "\n")

    def learning(self, epoch: int, model: str = "") -> dict[str, list[TrainingExample]]:
        """Each task's examples for the run's adapter of `epoch` (of `model`'s, in a run with several
        models; the last record of a task wins)."""
        out: dict[str, list[TrainingExample]] = {}
        path = self.path / "learning.jsonl"
        for lineno, line in _lines(path):
            rec = _parse(LearningRecord, path, lineno, line)
            if rec.epoch == epoch and rec.model == model:
                out[rec.task_id] = rec.examples
        return out

    def append_record(self, record: TaskRecord) -> None:
        with open(self.tasks_file, "a") as f:
            f.write(record.model_dump_json() + "\n")

    def write_results(self) -> tuple[Path, RunScore | None]:
        """submission.json (and score.json when all test outputs are known) from what has finished;
        unfinished tasks get placeholders. Streams the tasks: it holds the submission, never the grids."""
        attempts: dict[str, list[Attempt]] = {tid: r.attempts for tid, r in self.records().items()}
        data: dict[str, list[dict]] = {}
        for task in self.iter_tasks():
            data.update(build_submission([task], attempts))
        validate_submission_shape(data)
        submission = self.path / "submission.json"
        for path in (submission, self.path / "score.json"):
            check_writable(path)  # both, before either is written
        write_json_atomic(submission, data)
        scores = score_run(self.iter_tasks(), attempts)
        if scores is not None:
            write_json_atomic(self.path / "score.json", scores)
        return submission, scores


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Complete lines of a JSONL file with their numbers (from 1); a torn last line (no newline) is
    not a line yet. A line that is not UTF-8 is a `RunDirError`."""
    if not regular_file(path):
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if raw.endswith(b"\n") and raw.strip():
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RunDirError(f"{show_path(path)}: line {lineno}: not UTF-8 text (byte {exc.start})") from None
