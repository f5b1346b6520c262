"""Where commands write (`--out`, ARCSYNTH_RUN_ROOT), checked before anything connects or starts.

Each check tries what the command will do later and undoes it (`folders.folder_problem`), so a path
that cannot be had is one user error naming the option or setting, and nothing is left half-made:
no run directory, no queued job, no started cluster, no partial output file.
"""

from __future__ import annotations

from pathlib import Path

from arcsynth.common.cli_base import UserError
from arcsynth.common.folders import folder_problem
from arcsynth.common.models import RunConfig
from arcsynth.common.settings import Settings
from arcsynth.common.text import show_path, utf8_problem


def out_dir_problem(path: Path) -> str | None:
    """None when `path` can become a new folder of results: it is absent or an empty folder, its
    name names a folder (not `.` or `..`), and it (or, when it exists, its parent) can be made and
    written; else why not, naming the path."""
    if path.name in ("", ".", ".."):  # Path("") is "."; a folder cannot be replaced by itself
        return f"{show_path(path)} is not a new folder's path (give one, e.g. runs/my-run)"
    try:
        exists = path.exists()
        full = exists and (not path.is_dir() or any(path.iterdir()))
    except OSError as exc:
        return f"cannot read {show_path(path)}: {exc.strerror or exc}"
    if full:
        return f"{show_path(path)} exists and is not empty"
    problem = folder_problem(path.parent if exists else path)
    return f"cannot create {show_path(path)}: {problem}" if problem else None


def out_file_problem(path: Path) -> str | None:
    """None when the file `path` can be written (its folder made if need be); else why not."""
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        return f"cannot read {show_path(path)}: {exc.strerror or exc}"
    if is_dir or path.name in ("", ".", ".."):
        return f"{show_path(path)} is a folder, not a file's path"
    problem = folder_problem(path.parent)
    return f"cannot create {show_path(path)}: {problem}" if problem else None


def check_out(out: Path | None, what: str = "option --out") -> None:
    """A run directory (`--out`, or one under the run root: `what` names which) that can be made and
    recorded: UserError otherwise. Its name goes to Redis and JSON, so it must be UTF-8."""
    if out is None:
        return
    problem = utf8_problem(str(out))
    if problem:
        raise UserError(f"{what}: {show_path(out)}: the name is {problem}")
    problem = out_dir_problem(out)
    if problem:
        raise UserError(f"{what}: {problem}")


def run_dir_for(s: Settings, config: RunConfig, out: Path | None) -> Path:
    """`--out`, or a fresh folder under the run root; refused when it already holds something or
    cannot be made (checked by making and removing it: nothing is left)."""
    if out is not None:
        check_out(out)
        return out
    path = Path(s.run_root) / config.run_id
    check_out(path, "setting ARCSYNTH_RUN_ROOT")
    return path
