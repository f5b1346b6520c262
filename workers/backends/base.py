"""The interface every sampling backend implements, and the errors they raise."""

from __future__ import annotations

from typing import Protocol

from arcsynth.common.models import Completion, SamplingConfig


class PromptTooLong(ValueError):
    """The prompt does not fit the model's context; the task is skipped, not failed."""


class AdapterError(ValueError):
    """An adapter a backend cannot serve; the message says why."""


class NoChatTemplate(ValueError):
    """A chat prompt for a model whose tokenizer has no chat template (a base model)."""


# A chat prompt (messages; the tokenizer's chat template applies) or a plain completion prompt.
Prompt = list[dict[str, str]] | str


def chat_ids(tokenizer, prompt: Prompt, model: str) -> list[int]:
    """Token ids of `prompt`: the chat template applied to messages, or the text as it is."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplate(f"model {model} has no chat template: run it with --prompt base")
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


class Backend(Protocol):
    def generate(self, prompt: Prompt, sampling: SamplingConfig, adapter: str = "",
                 task_id: str = "") -> tuple[list[Completion], float]:
        """`sampling.n` completions of one prompt (through `adapter` if set), and the seconds it took."""
        ...

    def shutdown(self) -> None: ...
