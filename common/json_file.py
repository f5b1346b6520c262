"""Small JSON files that must hold one object: an adapter's manifest, a model's config and tokenizer config.

`read_json_object` returns the object or raises `JsonFileError`, one line naming the file and what
is wrong with it (unreadable, not a regular file, over `MAX_BYTES`, not UTF-8, not JSON, or JSON
that is not an object, like `[1]`). A FIFO or a device is refused before it is opened, so reading
never waits on a writer or reads without end.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from arcsynth.common.text import show_path

_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}
# Manifests and configs are kilobytes; a tokenizer config with its vocabulary a few MB.
MAX_BYTES = 64 * 1024 * 1024


class JsonFileError(ValueError):
    """A JSON file that is not one readable object; the message names the file."""


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; `JsonFileError` when it cannot be read or is anything else."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise JsonFileError(f"{show_path(path)}: not a regular file")
        if st.st_size > MAX_BYTES:
            raise JsonFileError(f"{show_path(path)}: file is {st.st_size} bytes, more than the {MAX_BYTES} allowed")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise JsonFileError(f"{show_path(path)}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"{show_path(path)}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonFileError(f"{show_path(path)}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # nested too deep, or a number with too many digits
        raise JsonFileError(f"{show_path(path)}: cannot parse: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise JsonFileError(f"{show_path(path)}: expected a JSON object, got {_JSON_TYPES.get(type(data), 'something else')}")
    return data
