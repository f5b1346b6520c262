"""Files of a run directory, one at a time: whether a path is a regular file, and atomic writes.

`regular_file` tells a regular file from one that is missing, and refuses anything else (a folder, a
FIFO, a device: reading it would fail or never end); `write_text_atomic` writes through a temporary
name and a rename, so a reader sees the old file or the new one. Both raise `RunDirError`, one line
naming the path.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from pydantic import BaseModel

from arcsynth.common.text import show_path


class RunDirError(RuntimeError):
    """A run directory that cannot be read or written as it is; the message names the file (and line and field)."""


def regular_file(path: Path) -> bool:
    """True when `path` is a regular file (through links), False when there is none; `RunDirError` when it
    is something else (a folder, a FIFO, a device) or cannot be looked at."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise RunDirError(f"{show_path(path)}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise RunDirError(f"{show_path(path)}: not a regular file")
    return True


def check_writable(path: Path) -> None:
    """`RunDirError` unless `write_json_atomic` can write `path`: neither it nor its temporary name is
    anything but a regular file (a folder there would stop the write half-way)."""
    for p in (path, _tmp_name(path)):
        try:
            regular_file(p)
        except RunDirError:
            raise RunDirError(f"{show_path(path)}: cannot write: {show_path(p.name)} is not a regular file") from None


def _tmp_name(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".tmp")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name, then rename: a reader sees the old file or the new one. A write
    that fails (see `check_writable`) leaves neither half-written and raises `RunDirError` naming `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    check_writable(path)
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirError(f"{show_path(path)}: cannot write: {exc.strerror or exc}") from None


def write_json_atomic(path: Path, data: BaseModel | dict) -> None:
    """`write_text_atomic` of `data` as JSON."""
    write_text_atomic(path, data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data))
