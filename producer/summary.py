"""A finished (or unfinished) run in numbers: what the report's summary, `compare` and tracking show.

Everything comes from the run directory, read task by task: an index of where each task's lines
are in `candidates.jsonl` is built first, so a run's candidates are never all in memory.

Definitions:
- a task's *score* is the official one (`score_task` of its recorded attempts; an unfinished
  task scores 0); the run's score is their mean, known only when every task's test outputs are;
- a task is *solved* when its score is 1; *samples* are candidates (search and refinement);
- per epoch: *candidates*, *valid* (ran on every train input without an error), *train_correct*
  (fit every train pair), and *solved* (tasks with a program of that epoch correct on every test);
- stage times are summed worker seconds: sampling from the candidates' request times (shared by
  a request's samples, so counted once per request), execution from their execution times (once
  per distinct program), fine-tuning from the manifests of the adapters the candidates name,
  where those are reachable; the wall time runs from the run's creation (run.json) to the last
  write of its candidates or task records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from arcsynth.common.json_file import read_json_object
from arcsynth.common.models import Candidate, RunConfig, Task
from arcsynth.common.passk import Curve, CurveBuilder, is_correct
from arcsynth.common.records import TaskRecord
from arcsynth.common.scoring import score_task
from arcsynth.common.text import show_path
from arcsynth.producer.run_files import RunDirError, regular_file
from arcsynth.producer.rundir import RunDir, line_error

ADAPTER_MANIFEST = "arcsynth_manifest.json"  # written by the fine-tune worker beside each adapter
_TASK_ID = re.compile(rb'^\{"task_id":"([^"\\]*)"')


class RunReadError(ValueError):
    """A run directory that cannot be read; the message names the file and the field."""


class TaskRow(BaseModel):
    task_id: str
    status: str  # done, failed, skipped, cancelled, or unfinished (no record yet)
    reason: str = ""
    score: float | None = None  # None: test outputs unknown
    best_train_accuracy: float | None = None  # best train pixel accuracy of any program; None: none ran
    candidates: int = 0
    epochs: int = 0  # epochs that sampled this task


class EpochTotals(BaseModel):
    candidates: int = 0
    valid: int = 0
    train_correct: int = 0
    solved: int = 0


class StageTimes(BaseModel):
    sample_s: float = 0.0
    execute_s: float = 0.0
    finetune_s: float | None = None  # None: the run fine-tuned but no adapter manifest was reachable
    finetunes: int = 0  # adapters the run trained (and sampled through)
    finetunes_timed: int = 0  # of those, how many manifests gave their time


class RunSummary(BaseModel):
    path: str
    config: RunConfig
    tasks: int
    statuses: dict[str, int]
    score: float | None  # None: some task's test outputs are unknown
    solved: int | None
    samples: int
    wall_s: float | None
    times: StageTimes
    per_epoch: dict[int, EpochTotals]
    per_model: dict[str, EpochTotals] = {}  # runs with several models: the same counts, by model
    rows: list[TaskRow]
    curves: list[Curve]
    overall: Curve  # every candidate of every task together: what `compare` sets side by side

    @property
    def samples_per_task(self) -> float:
        return self.samples / self.tasks if self.tasks else 0.0

    @property
    def solved_per_1k_samples(self) -> float | None:
        return None if self.solved is None or not self.samples else 1000 * self.solved / self.samples


def open_run(path: Path | str) -> RunDir:
    """The run directory at `path`, checked to hold a readable run.json."""
    rundir = RunDir(Path(path))
    problem = rundir.problem()
    if problem:
        raise RunReadError(problem)
    try:
        rundir.config()
    except RunDirError as exc:
        raise RunReadError(str(exc)) from None
    return rundir


def _bad(path: Path, line: int, exc: ValidationError) -> RunReadError:
    return RunReadError(str(line_error(path, line, exc)))


def candidate_index(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Per task, the (byte offset, line number) of each of its complete lines, in recorded order."""
    index: dict[str, list[tuple[int, int]]] = {}
    try:
        if not regular_file(path):
            return index
    except RunDirError as exc:
        raise RunReadError(str(exc)) from None
    with open(path, "rb") as f:
        pos = 0
        for lineno, line in enumerate(f, 1):
            if line.endswith(b"\n") and line.strip():
                m = _TASK_ID.match(line)
                try:
                    tid = m.group(1).decode() if m else json.loads(line)["task_id"]
                except (ValueError, KeyError, TypeError):
                    raise RunReadError(f"{show_path(path)}: line {lineno}: field task_id: missing or not JSON") from None
                index.setdefault(tid, []).append((pos, lineno))
            pos += len(line)
    return index


def read_candidates(path: Path, where: list[tuple[int, int]]) -> list[Candidate]:
    """The candidates at the given (offset, line) places of `path`, in that order."""
    out: list[Candidate] = []
    if not where:
        return out  # a task with no candidates, maybe in a run with no candidates.jsonl at all
    with open(path, "rb") as f:
        for offset, lineno in where:
            f.seek(offset)
            try:
                out.append(Candidate.model_validate_json(f.readline()))
            except ValidationError as exc:
                raise _bad(path, lineno, exc) from None
    return out


def records(rundir: RunDir) -> dict[str, TaskRecord]:
    try:
        return rundir.records()
    except RunDirError as exc:
        raise RunReadError(str(exc)) from None


def iter_run(rundir: RunDir, task_ids: set[str] | None = None) -> Iterator[tuple[Task, TaskRecord | None, list[Candidate]]]:
    """Each task of the run (of `task_ids` only, when given) with its record and its candidates in recorded order."""
    recs = records(rundir)
    index = candidate_index(rundir.candidates_file)
    tasks = rundir.iter_tasks()
    while True:
        try:
            task = next(tasks)
        except StopIteration:
            return
        except RunDirError as exc:
            raise RunReadError(str(exc)) from None
        if task_ids is None or task.id in task_ids:
            yield task, recs.get(task.id), read_candidates(rundir.candidates_file, index.get(task.id, []))


def check_run(rundir: RunDir) -> None:
    """Read every task, record and candidate of the run as `iter_run` does (what `compare` and the
    report read); RunReadError naming the file, line and field of the first that does not validate."""
    for _ in iter_run(rundir):
        pass


def _status(rec: TaskRecord | None) -> str:
    return "unfinished" if rec is None else str(getattr(rec.status, "value", rec.status))


def adapter_seconds(adapter: str) -> float | None:
    """Training time from an adapter's manifest (a local folder or an fsspec URL); None when unreachable."""
    try:
        if "://" in adapter:
            import fsspec

            with fsspec.open(f"{adapter.rstrip('/')}/{ADAPTER_MANIFEST}", "r") as f:
                return float(json.load(f)["seconds"])
        return float(read_json_object(Path(adapter) / ADAPTER_MANIFEST)["seconds"])  # never waits on a FIFO
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None


class Summariser:
    """Builds a `RunSummary` one task at a time (`add`), then `finish`."""

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        self.config = rundir.config()
        self.curves = CurveBuilder(default_model=self.config.model, vote=self.config.vote)
        self.rows: list[TaskRow] = []
        self.per_epoch: dict[int, EpochTotals] = {}
        self.per_model: dict[str, EpochTotals] = {}
        self.requests: dict[tuple[str, int, str, str, str], float] = {}
        self.programs: dict[tuple[str, int, str, str, str, int], float] = {}
        self.adapters: set[str] = set()
        self.scores: list[float] | None = []

    def add(self, task: Task, rec: TaskRecord | None, cands: list[Candidate]) -> TaskRow:
        self.curves.add(task, cands)
        solved_epochs: set[int] = set()
        solved_models: set[str] = set()
        for c in cands:
            e = self.per_epoch.setdefault(c.epoch, EpochTotals())
            m = self.per_model.setdefault(c.model or self.config.model, EpochTotals())
            ex = c.execution
            correct = is_correct(task, c)
            for t in (e, m):
                t.candidates += 1
                t.valid += int(ex is not None and all(r.error == "none" for r in ex.train))
                t.train_correct += int(bool(ex and ex.all_train_correct))
            if c.epoch not in solved_epochs and correct:
                solved_epochs.add(c.epoch)
                e.solved += 1
            if (c.model or self.config.model) not in solved_models and correct:
                solved_models.add(c.model or self.config.model)
                m.solved += 1
            key = (c.task_id, c.epoch, c.parent, c.model, c.job)  # one request: one model's, one job's
            self.requests[key] = max(self.requests.get(key, 0.0), c.completion.seconds)
            if ex is not None:
                self.programs[(*key, hash(c.code))] = ex.seconds  # a job runs each distinct program once
            if c.adapter and c.adapter != self.config.adapter:
                self.adapters.add(c.adapter)
        score = None
        if task.has_solutions():
            score = score_task(task, rec.attempts) if rec else 0.0
            if self.scores is not None:
                self.scores.append(score)
        else:
            self.scores = None
        accs = [c.execution.train_pixel_accuracy for c in cands if c.execution is not None]
        row = TaskRow(task_id=task.id, status=_status(rec), reason=rec.reason if rec else "", score=score,
                      best_train_accuracy=max(accs) if accs else None, candidates=len(cands),
                      epochs=len({c.epoch for c in cands}))
        self.rows.append(row)
        return row

    def _wall_s(self) -> float | None:
        p = self.rundir.path
        ends = [f.stat().st_mtime for f in (p / "tasks.jsonl", p / "candidates.jsonl") if f.exists() and f.stat().st_size]
        start = min(f.stat().st_mtime for f in (p / "run.json", p / "inputs.jsonl"))
        return max(0.0, max(ends) - start) if ends else None

    def finish(self) -> RunSummary:
        timed = [s for s in map(adapter_seconds, sorted(self.adapters)) if s is not None]
        times = StageTimes(sample_s=sum(self.requests.values()), execute_s=sum(self.programs.values()),
                           finetune_s=sum(timed) if timed or not self.adapters else None,
                           finetunes=len(self.adapters), finetunes_timed=len(timed))
        statuses: dict[str, int] = {}
        for r in self.rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        scored = self.scores is not None and len(self.scores) > 0
        return RunSummary(
            path=str(self.rundir.path), config=self.config, tasks=len(self.rows), statuses=statuses,
            score=sum(self.scores) / len(self.scores) if scored else None,  # type: ignore[arg-type]
            solved=sum(s == 1.0 for s in self.scores) if scored else None,  # type: ignore[union-attr]
            samples=sum(r.candidates for r in self.rows), wall_s=self._wall_s(), times=times,
            per_epoch=dict(sorted(self.per_epoch.items())),
            per_model=dict(sorted(self.per_model.items())) if len(self.config.all_models) > 1 else {},
            rows=self.rows, curves=self.curves.curves(),
            overall=self.curves.overall())


def summarise(run: Path | str | RunDir, task_ids: set[str] | None = None) -> RunSummary:
    """The summary of a run directory (of `task_ids` only, when given); RunReadError when unreadable."""
    rundir = run if isinstance(run, RunDir) else open_run(run)
    s = Summariser(rundir)
    for task, rec, cands in iter_run(rundir, task_ids):
        s.add(task, rec, cands)
    return s.finish()


def flat_settings(config: RunConfig) -> dict[str, str]:
    """The run's settings as `a.b.c -> value` strings (lists as JSON); task ids become their count."""
    out: dict[str, str] = {"tasks": str(len(config.task_ids))}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

    walk("", config.model_dump(mode="json", exclude={"task_ids"}))
    return out
