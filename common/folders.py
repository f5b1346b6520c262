"""Can a folder be had here? Asked before a command starts anything, so it never stops half-way.

`folder_problem` tries what the command will do later, then undoes it: it makes the folders that
are missing, writes one file in the last, and removes all it made. Only a local path is checked
(an fsspec URL is the caller's business).
"""

from __future__ import annotations

import uuid
from pathlib import Path


def folder_problem(folder: Path) -> str | None:
    """None when `folder` is (or can be made) a folder this process can write in; else the reason in a
    few words (the system's, e.g. `Not a directory`). Leaves nothing behind."""
    folder = Path(folder).absolute()
    made: list[Path] = []
    try:
        for path in [*reversed(folder.parents), folder]:
            if not path.exists():
                path.mkdir()
                made.append(path)
        probe = folder / f".arcsynth-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return str(exc.strerror or exc)
    finally:
        for path in reversed(made):
            path.rmdir()
    return None
