"""The interface every sampling backend implements, and the errors they raise."""

from __future__ import annotations

from typing import Protocol

from arcsynth.common.models import Completion, SamplingConfig


class PromptTooLong(ValueError):
    """The prompt does not fit the model's context; the task is skipped, not failed."""


class AdapterError(ValueError):
    """An adapter a backend cannot serve; the message says why."""


class Backend(Protocol):
    def generate(self, messages: list[dict[str, str]], sampling: SamplingConfig, adapter: str = "",
                 task_id: str = "") -> tuple[list[Completion], float]:
        """`sampling.n` completions of one chat prompt (through `adapter` if set), and the seconds it took."""
        ...

    def shutdown(self) -> None: ...
