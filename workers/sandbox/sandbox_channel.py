"""The result channel between a forked run and the helper: what a run may write, and how it is read.

A run reports one JSON line per input on its channel (file descriptor 3 in the run):
`{"output": grid}` or `{"error": kind, "message": text}`; the first line may add `"load": true`
when the program failed before any input ran (the verdict then stands for every input). The
untrusted program owns that descriptor as much as the code that writes to it, so the helper
trusts nothing it reads there: `parse_results` turns whatever arrived into exactly one verdict
per input, and anything it cannot accept becomes that run's own `crashed` (or `invalid_output`,
for a well-formed line whose grid is invalid) verdict with a message. It never raises.

Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import json

MAX_SIDE = 30
MAX_LINE = 64 * 1024  # a 30x30 grid is under 3 KiB of JSON; a message is capped at 500 characters
MAX_MESSAGE = 500
# Verdicts a run itself may report; `timeout` and `crashed` are the helper's to give.
RUN_ERRORS = frozenset({"syntax_error", "no_transform", "exception", "memory", "invalid_output"})


def clean_message(text: str) -> str:
    """`text` capped and made encodable (lone surrogates replaced), so it can be written anywhere."""
    return text[:MAX_MESSAGE].encode("utf-8", "replace").decode("utf-8")


_COLOURS = frozenset(range(10))


def _plain_grid(value: object) -> bool:
    """The fast path: a list of 1..30 equally long lists of 1..30 plain ints (not bools) in 0..9."""
    if type(value) is not list or not 1 <= len(value) <= MAX_SIDE or type(value[0]) is not list:
        return False
    width = len(value[0])
    return 1 <= width <= MAX_SIDE and all(
        type(row) is list and len(row) == width and set(map(type, row)) == {int} and _COLOURS.issuperset(row)
        for row in value)


def check_grid(value: object) -> tuple[list[list[int]] | None, str]:
    """Validate a value as an ARC grid: 1..30 rows of 1..30 ints in 0..9, all rows equally long.

    Accepts lists, tuples and numpy arrays (and numpy integers as cells); booleans and floats are
    not colours. Returns `(grid, "")` with plain ints, or `(None, reason)`.
    """
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.ndim != 2:
            return None, f"array with {value.ndim} dimensions"
        if value.size > MAX_SIDE * MAX_SIDE:
            return None, f"array of shape {value.shape} is larger than 30x30"
        value = value.tolist()
    if _plain_grid(value):
        return value, ""  # type: ignore[return-value]
    # Each level is read once, into plain lists and ints: a subclass's __len__, __iter__ or __int__
    # may answer differently each time, and what was checked must be what is sent.
    if not isinstance(value, (list, tuple)):
        return None, "not a list of 1..30 rows"
    value = list(value)
    if not 1 <= len(value) <= MAX_SIDE:
        return None, "not a list of 1..30 rows"
    rows = []
    width = None
    for row in value:
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if not isinstance(row, (list, tuple)):
            return None, "a row is not a list of 1..30 cells"
        row = list(row)
        if not 1 <= len(row) <= MAX_SIDE:
            return None, "a row is not a list of 1..30 cells"
        if width is None:
            width = len(row)
        elif len(row) != width:
            return None, "rows have different lengths"
        cells = []
        for c in row:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
                return None, f"cell {c!r:.20} is not an int"
            colour = int(c)
            if type(colour) is not int:
                return None, "a cell's int() is not an int"
            if not 0 <= colour <= 9:
                return None, f"colour {colour if abs(colour) < 10**12 else 'of more than 12 digits'} outside 0..9"
            cells.append(colour)
        rows.append(cells)
    return rows, ""


def _corrupt(reason: str) -> dict:
    return {"error": "crashed", "message": f"the run's result channel was corrupted: {reason}"}


def parse_line(raw: bytes, first: bool) -> tuple[dict, bool, bool]:
    """One line of the channel as `(verdict, load, trusted)`.

    `load` is true for a first line that reports a failure before any input ran. `trusted` is
    false when the line was not a result at all (the verdict then says how it was corrupted), and
    the helper believes nothing after it.
    """
    if len(raw) > MAX_LINE:
        return _corrupt(f"a line of {len(raw)} bytes"), False, False
    try:
        item = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _corrupt("bytes that are not UTF-8 text"), False, False
    except (ValueError, RecursionError):
        return _corrupt(f"a line that is not JSON ({raw[:40]!r})"), False, False
    if not isinstance(item, dict):
        return _corrupt(f"a JSON {type(item).__name__}, not an object"), False, False
    keys = set(item)
    if keys == {"output"}:
        grid, reason = check_grid(item["output"])
        if reason:
            return {"error": "invalid_output", "message": reason}, False, True
        return {"output": grid}, False, True
    unknown = sorted(keys - {"error", "message", "load"}, key=str)
    if unknown:
        return _corrupt(f"unknown key {clean_message(repr(unknown[0])[:40])}"), False, False
    error, message, load = item.get("error"), item.get("message", ""), item.get("load", False)
    if not isinstance(error, str) or error not in RUN_ERRORS:
        return _corrupt(f"an unknown verdict {clean_message(repr(error)[:40])}"), False, False
    if not isinstance(message, str):
        return _corrupt("a message that is not a string"), False, False
    if load is not False and (load is not True or not first):
        return _corrupt("a misplaced load flag"), False, False
    return {"error": error, "message": clean_message(message)}, load, True


def parse_results(buf: bytes, count: int, complete: bool) -> tuple[list[dict], dict | None]:
    """Verdicts for up to `count` inputs from a channel's bytes.

    `complete` says the run ended on its own (so an unterminated last line is junk, not a line cut
    off by a kill). Returns the verdicts read (fewer than `count` when the run stopped early) and,
    when the channel was corrupted, the verdict every input without a trusted result gets.
    """
    lines = buf.split(b"\n")
    tail = lines.pop()
    if tail and complete:
        lines.append(tail)
    results: list[dict] = []
    for i, raw in enumerate(lines):
        if len(results) >= count:
            break
        verdict, load, trusted = parse_line(raw, first=i == 0)
        if not trusted:
            return results, verdict
        if load:
            return [verdict] * count, None
        results.append(verdict)
    return results, None
