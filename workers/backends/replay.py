"""Replay: serve completions saved earlier, to re-score generations or benchmark everything after sampling.

The file is JSONL, one record per line, each with a `task_id` and its completion in any of the
forms in use: `text` (a string), `completion` as a string, or `completion: {"text": ...}` (a run's
`candidates.jsonl`). Records with `refine: true`, or a `parent` (as a run's candidates.jsonl has
them), answer refinement prompts. A record with a `model` (a run's candidates.jsonl has it) is
served only by the worker of that model, so a run with several models replays each model's own
programs; a record without one is served by every worker. A file that cannot be read or is not a regular
file (a FIFO or /dev/zero would never end), or a record without these, is a `ReplayFileError` naming the
file and the line: never a model.
"""

from __future__ import annotations

import json
import os
import stat
from collections import defaultdict
from typing import Any

from arcsynth.common.models import Completion, SamplingConfig


class ReplayFileError(ValueError):
    """The replay file is missing, unreadable, or holds a record that is not a completion."""


def record_text(rec: Any) -> str:
    """The completion text of one replay record, in any of its accepted forms; ValueError otherwise."""
    if not isinstance(rec, dict):
        raise ValueError("expected a JSON object")
    if not isinstance(rec.get("task_id"), str):
        raise ValueError("needs a task_id (a string)")
    if "completion" in rec:
        completion = rec["completion"]
        text = completion.get("text") if isinstance(completion, dict) else completion
        where = "completion.text" if isinstance(completion, dict) else "completion"
    else:
        text, where = rec.get("text"), "text"
    if not isinstance(text, str):
        raise ValueError(f"needs text, completion or completion.text (a string); {where} is {type(text).__name__}")
    return text


class ReplayBackend:
    def __init__(self, path: str, model: str = "") -> None:
        """Read every record of `path` now: a bad file stops the worker at start, not at its first job.
        `model`: the model this worker serves (records of other models are left out)."""
        self.path, self.model = path, model
        self.by_task: dict[str, list[Completion]] = defaultdict(list)
        self.refinements: dict[str, list[Completion]] = defaultdict(list)
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # before open: opening a FIFO waits for a writer
                raise ReplayFileError(f"replay file {path}: not a regular file (a folder, FIFO or device)")
            f = open(path, "rb")
        except OSError as exc:
            raise ReplayFileError(f"replay file {path}: cannot read: {exc.strerror}") from None
        lineno = 0
        with f:
            try:
                for line in f:
                    lineno += 1
                    if line.strip():
                        self._add(json.loads(line.decode("utf-8")))
            except UnicodeDecodeError:
                raise ReplayFileError(f"replay file {path}: line {lineno}: not UTF-8 text") from None
            except (ValueError, RecursionError) as exc:
                raise ReplayFileError(f"replay file {path}: line {lineno}: {str(exc)[:200]}") from None

    def _add(self, rec: Any) -> None:
        text = record_text(rec)
        if rec.get("model") and self.model and rec["model"] != self.model:
            return
        refined = bool(rec.get("refine") or rec.get("parent"))
        (self.refinements if refined else self.by_task)[rec["task_id"]].append(Completion(text=text))

    def generate(self, prompt: list[dict[str, str]] | str, sampling: SamplingConfig, adapter: str = "",
                 task_id: str = "") -> tuple[list[Completion], float]:
        """The first `n` saved completions of `task_id` (fewer if fewer were saved).

        A refinement prompt (one with an earlier assistant turn) gets the saved refinements
        (records with `refine: true`, or a `parent`, as a run's candidates.jsonl has them)."""
        refining = not isinstance(prompt, str) and any(m["role"] == "assistant" for m in prompt)
        return (self.refinements if refining else self.by_task).get(task_id, [])[: sampling.n], 0.0

    def shutdown(self) -> None:
        pass
