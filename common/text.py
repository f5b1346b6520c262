"""Text fit for a one-line user error: ids, keys and paths shown escaped, and text that is not UTF-8 found.

A name from the filesystem, the command line or the environment may hold bytes that are not UTF-8
(Python keeps them as lone surrogates, `\\udcff`) or control characters (a newline in a file name).
Neither may reach a message as is (a newline splits the one line) nor a JSON file or Redis (a lone
surrogate cannot be encoded): `show` and `show_path` escape them, `utf8_problem` refuses them.
"""

from __future__ import annotations

import json
import os

SHOW_CHARS = 60  # ids, keys and numbers longer than this are cut short in messages
SHOW_PATH_CHARS = 240  # paths longer than this too


def _escape(ch: str) -> str:
    """One character that is not printable, escaped: `\\n`, `\\u0001`, a byte that is not UTF-8 as `\\xff`."""
    if "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8, as os.fsdecode keeps it
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return json.dumps(ch)[1:-1]


def escape(text: str) -> str:
    """`text` with every character that is not printable escaped (a newline becomes `\\n`); nothing cut."""
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def show(text: str) -> str:
    """`text` fit for a one-line message: as is when short and printable, else escaped and cut ("" when empty)."""
    if not text:
        return '""'
    if len(text) <= SHOW_CHARS and text.isprintable():
        return text
    cut = json.dumps(text[:SHOW_CHARS])[1:-1]
    return cut + (f"… ({len(text)} characters)" if len(text) > SHOW_CHARS else "")


def show_path(path: str | os.PathLike[str]) -> str:
    """A path fit for a one-line message: control characters and bytes that are not UTF-8 escaped, and
    cut after `SHOW_PATH_CHARS` characters (a name too long for the filesystem is still one short line)."""
    text = os.fspath(path)
    if len(text) <= SHOW_PATH_CHARS:
        return escape(text)
    return escape(text[:SHOW_PATH_CHARS]) + f"… ({len(text)} characters)"


def utf8_problem(text: str) -> str | None:
    """None when `text` can be written as UTF-8, else the reason (the first byte that is not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not UTF-8 ({_escape(text[exc.start])} at character {exc.start})"
    return None
