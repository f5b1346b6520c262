"""The `.env` file the settings come from, checked line by line before pydantic-settings reads it.

python-dotenv (under pydantic-settings) raises UnicodeDecodeError on bytes that are not UTF-8 and
only warns about a line it cannot parse, then drops it: a setting would be silently lost.
`check_env_file` refuses both with the line's number (never its text, which may hold a password), a
bare `ARCSYNTH_…` name without `=value`, which python-dotenv reads as no value and the settings drop,
and an `ARCSYNTH_…` name that is no setting (a misspelt one would be ignored).
"""

from __future__ import annotations

import io
from pathlib import Path

from dotenv.parser import parse_stream

from arcsynth.common.settings import unknown_variable


class EnvFileError(ValueError):
    """A `.env` that would not be read as written: one line naming the file and the line."""


def check_env_file(path: Path) -> None:
    """Raise `EnvFileError` when the regular file `path` has a line that is not UTF-8 or not
    `NAME=value` (as python-dotenv reads it), when `path` is a FIFO (pydantic-settings would read it,
    waiting for ever on a writer), a device or socket, or a link to nothing (its settings would be
    skipped without a word); a missing file, or a folder (a virtualenv named .env), is not read."""
    if path.is_fifo():
        raise EnvFileError(f"{path}: a FIFO, not a regular file (reading it would wait for a writer)")
    if path.is_symlink() and not path.exists():
        raise EnvFileError(f"{path}: a link to nothing (or a loop of links): its settings would be skipped")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise EnvFileError(f"{path}: not a regular file (a device or socket)")
    if not path.is_file():
        return
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EnvFileError(f"{path}: cannot read: {exc.strerror}") from None
    for number, line in enumerate(raw.split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvFileError(f"{path}: line {number}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
    for binding in parse_stream(io.StringIO(raw.decode("utf-8"))):
        if binding.error:
            text = binding.original.string
            number = binding.original.line + text[: len(text) - len(text.lstrip())].count("\n")
            raise EnvFileError(f"{path}: line {number}: not a NAME=value line (python-dotenv cannot parse it)")
        if binding.key is not None and binding.value is None and binding.key.upper().startswith("ARCSYNTH_"):
            # python-dotenv reads a bare `NAME` as a name without a value, which the settings drop
            number = binding.original.line + binding.original.string.count("\n", 0, binding.original.string.find(binding.key))
            raise EnvFileError(f"{path}: line {number}: {binding.key} has no =value (give NAME=value)")
        unknown = unknown_variable(binding.key) if binding.key is not None else None
        if unknown:
            number = binding.original.line + binding.original.string.count("\n", 0, binding.original.string.find(binding.key))
            raise EnvFileError(f"{path}: line {number}: {unknown}")
