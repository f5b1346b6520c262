"""Read a task or Kaggle JSON file safely: bounded in size and memory, every failure one line.

`read_json(path, task_id)` returns the parsed JSON or raises `TaskLoadError` whose message names
the file and, where there is one, the task and the field:

- files over `MAX_FILE_BYTES`, files that are not regular files (a FIFO, a device, a folder);
- files whose parse would cost more than `memory_budget(size)` (estimated from their count of
  arrays, objects and commas before anything is parsed: a file of a million 1x1 grids costs ~45x
  its size as Python objects, an ordinary ARC file ~9x);
- text that is not UTF-8 or not JSON, nesting the JSON parser refuses (more than `MAX_DEPTH`
  levels named), numbers with more digits than Python converts, and repeated keys in one object.

The parser's own errors carry no path, so for the last three `locate` scans the text once more,
left to right, tracking keys and list indices, and finds the first such problem.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path
from typing import Any

from arcsynth.common.text import show, show_path

# Lowered from 100 MiB: validation holds the file ~9-16 times over as Python objects. The largest
# published ARC file (ARC-AGI-2's training challenges) is 4.7 MB; pretty-printed it stays under this.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 100  # an ARC task file needs 6 levels (a Kaggle file: task id, train, pair, grid, row)


class TaskLoadError(ValueError):
    """A user-facing input error: one line naming the file, task and field."""


def memory_budget(size: int) -> int:
    """The most memory (bytes, estimated) that parsing and validating a file of `size` bytes may take."""
    return 16 * size + 64 * 1024 * 1024


def estimate_memory(raw: bytes) -> int:
    """Bytes the parsed file and its validated tasks take, from counts (calibrated on CPython 3.11):
    a JSON object becomes a dict and a pydantic model, an array two lists, a comma two pointers,
    a key (a colon) a string, a tuple and a slot in its dict."""
    return 800 * raw.count(b"{") + 130 * raw.count(b"[") + 16 * raw.count(b",") + 200 * raw.count(b":")


def short_numbers(message: str) -> str:
    """Cut runs of more than 20 digits in a message (a 4,000-digit colour is still one short line)."""
    return re.sub(r"\d{21,}", lambda m: f"{m.group()[:8]}…({len(m.group())} digits)", message)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """`train[0].input[2][3]` from a location tuple of keys and indices."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{show(str(part))}" if out else show(str(part)))
    return out


def where(loc: tuple[Any, ...] | list[Any], task_id: str | None) -> str:
    """`task T: field F` for a location in a task file (`task_id` given) or a Kaggle file (loc[0] is the task id)."""
    if task_id is None:
        if not loc:
            return "top level"
        task_id, loc = str(loc[0]), loc[1:]
    field = field_path(loc[:8]) + ("…" if len(loc) > 8 else "")
    return f"task {show(task_id)}" + (f": field {field}" if loc else "")


def read_json(path: Path, task_id: str | None = None) -> Any:
    """Parse `path`: a task file whose task is `task_id`, or (None) a file mapping task ids to values."""
    try:
        st = path.stat()
    except (OSError, ValueError) as exc:
        raise TaskLoadError(f"{show_path(path)}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TaskLoadError(f"{show_path(path)}: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise TaskLoadError(f"{show_path(path)}: file is {st.st_size} bytes, more than the {MAX_FILE_BYTES} allowed "
                            "(32 MiB, lowered from 100 MiB so that validating a file stays within memory)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskLoadError(f"{show_path(path)}: cannot read: {exc.strerror}") from None
    need, budget = estimate_memory(raw), memory_budget(len(raw))
    if need > budget:
        raise TaskLoadError(f"{show_path(path)}: {raw.count(b'[') + raw.count(b'{')} JSON arrays and objects in {len(raw)} bytes "
                            f"would take about {need >> 20} MiB to validate, more than the {budget >> 20} MiB allowed "
                            "for a file this size (16 times its size + 64 MiB)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaskLoadError(f"{show_path(path)}: not UTF-8 text (byte {exc.start})") from None
    del raw
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise TaskLoadError(f"{show_path(path)}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # too deep, too many digits, or a repeated key
        found = locate(text)
        if found is None:
            raise TaskLoadError(f"{show_path(path)}: cannot parse: {short_numbers(str(exc))[:200]}") from None
        loc, problem = found
        if problem == "duplicate" and task_id is None and len(loc) == 1:
            raise TaskLoadError(f"{show_path(path)}: task {show(str(loc[0]))}: duplicate task id in one JSON object") from None
        raise TaskLoadError(f"{show_path(path)}: {where(loc, task_id)}: {problem_text(problem, loc)}") from None


def problem_text(problem: str, loc: tuple[Any, ...]) -> str:
    if problem == "deep":
        return f"nested more than {MAX_DEPTH} levels deep"
    if problem == "duplicate":
        return f"duplicate key {show(str(loc[-1]))!r} in one JSON object"
    return f"a number with more than {_LONG - 1} digits"


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON allows repeated keys and keeps the last; for task ids that silently loses a task."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey  # `locate` finds where
    return out


_LONG = (sys.get_int_max_str_digits() or 4300) + 1
_TOKEN = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")(\s*:)?|([\[{])|([\]}])|(?<!\d)(\d{' + str(_LONG) + r',})')


class _Frame:
    __slots__ = ("kind", "start", "key", "keys", "inner_commas")

    def __init__(self, kind: str, start: int) -> None:
        self.kind, self.start, self.key, self.keys, self.inner_commas = kind, start, "", set(), 0


def locate(text: str) -> tuple[tuple[Any, ...], str] | None:
    """The location (keys and list indices) and kind (`deep`, `duplicate`, `digits`) of the first
    problem in `text`, or None. Indices count commas at the list's own level; one pass, stops early."""
    stack: list[_Frame] = []

    def path(pos: int) -> tuple[Any, ...]:
        out: list[Any] = []
        for i, frame in enumerate(stack):
            child = stack[i + 1].start if i + 1 < len(stack) else pos
            out.append(frame.key if frame.kind == "{" else text.count(",", frame.start, child) - frame.inner_commas)
        return tuple(out)

    for m in _TOKEN.finditer(text):
        string, colon, opening, closing, digits = m.groups()
        top = stack[-1] if stack else None
        if string is not None:
            if colon and top is not None and top.kind == "{":
                try:
                    key = json.loads(string)
                except ValueError:
                    key = string[1:-1]
                if key in top.keys:
                    top.key = key
                    return path(m.start()), "duplicate"
                top.keys.add(key)
                top.key = key
            elif top is not None and top.kind == "[":
                top.inner_commas += string.count(",")
        elif opening is not None:
            if len(stack) >= MAX_DEPTH:
                return path(m.start()), "deep"
            stack.append(_Frame(opening, m.start()))
        elif closing is not None:
            if not stack:
                return None
            done = stack.pop()
            if stack and stack[-1].kind == "[":
                stack[-1].inner_commas += text.count(",", done.start, m.end())
        elif digits is not None:
            return path(m.start()), "digits"
    return None
