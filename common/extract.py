"""Pull the program out of a model's answer: the last fenced Python block defining `transform`."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_DEF = re.compile(r"^def\s+transform\s*\(", re.MULTILINE)


class ExtractionError(ValueError):
    """No usable program in the completion; the message says why."""


def _defines_transform(code: str) -> bool:
    return bool(_DEF.search(code))


def extract_code(text: str) -> str:
    """Return the code, or raise `ExtractionError` with the reason."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python_blocks = [body for lang, body in blocks if lang in ("", "python", "py", "python3")]
    for body in reversed(python_blocks):
        if _defines_transform(body):
            return body.strip("\n")
    if not blocks:
        # No fences at all: take from the first `def transform` (or an import just before it).
        match = _DEF.search(text)
        if match:
            start = text.rfind("\n\n", 0, match.start())
            head = text[start + 2 if start >= 0 else 0 : match.start()]
            keep = head if all(ln.startswith(("import ", "from ")) or not ln.strip()
                               for ln in head.splitlines()) else ""
            return (keep + text[match.start():]).strip("\n")
        raise ExtractionError("no code block and no `def transform` in the completion")
    if python_blocks:
        raise ExtractionError("no Python code block defines `transform`")
    raise ExtractionError("no Python code block in the completion")



def normalise(code: str) -> str:
    """Whitespace-insensitive identity of a program: identical programs run once and count once."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())
