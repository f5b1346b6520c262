"""Replay: serve completions saved earlier (a run's `candidates.jsonl`, or any JSONL with
`task_id` and `text`, and `refine: true` for answers to refinement prompts), to re-score
generations or benchmark everything after sampling."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from arcsynth.common.models import Completion, SamplingConfig


class ReplayBackend:
    def __init__(self, path: str) -> None:
        self.path = path
        self.by_task: dict[str, list[Completion]] = defaultdict(list)
        self.refinements: dict[str, list[Completion]] = defaultdict(list)
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    text = rec["completion"]["text"] if "completion" in rec else rec["text"]
                    refined = bool(rec.get("refine") or rec.get("parent"))
                    (self.refinements if refined else self.by_task)[rec["task_id"]].append(Completion(text=text))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{Path(path)}: line {lineno}: needs task_id and text ({exc})") from None

    def generate(self, messages: list[dict[str, str]], sampling: SamplingConfig, adapter: str = "",
                 task_id: str = "") -> tuple[list[Completion], float]:
        """The first `n` saved completions of `task_id` (fewer if fewer were saved).

        A refinement prompt (one with an earlier assistant turn) gets the saved refinements
        (records with `refine: true`, or a `parent`, as a run's candidates.jsonl has them)."""
        refining = any(m["role"] == "assistant" for m in messages)
        return (self.refinements if refining else self.by_task).get(task_id, [])[: sampling.n], 0.0

    def shutdown(self) -> None:
        pass
