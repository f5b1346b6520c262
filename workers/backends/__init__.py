"""Sampling backends behind one interface (`base.Backend`): `generate(messages, sampling, adapter)`.

`vllm` (the default: one engine per worker), `transformers` (any device, no vLLM), `openai`
(any OpenAI-compatible endpoint, e.g. `vllm serve`), `replay` (completions from a JSONL file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arcsynth.common.settings import Settings
from arcsynth.workers.backends.base import AdapterError, Backend, PromptTooLong

if TYPE_CHECKING:
    from arcsynth.workers.backends.vllm_engine import EngineConfig

__all__ = ["AdapterError", "Backend", "PromptTooLong", "make_backend"]


def make_backend(settings: Settings) -> Backend:
    """The backend named by `ARCSYNTH_BACKEND`, built from settings."""
    from arcsynth.common.model_store import resolve_model

    kind = settings.backend
    if kind == "replay":
        from arcsynth.workers.backends.replay import ReplayBackend

        if not settings.replay_file:
            raise ValueError("ARCSYNTH_BACKEND=replay needs ARCSYNTH_REPLAY_FILE")
        return ReplayBackend(settings.replay_file, settings.model)
    if kind == "openai":
        from arcsynth.workers.backends.openai_api import OpenAIBackend

        return OpenAIBackend(settings)
    model = resolve_model(settings.model)
    if kind == "transformers":
        from arcsynth.workers.backends.hf import TransformersBackend

        return TransformersBackend(model, max_model_len=settings.max_model_len,
                                   adapter_cache=settings.adapter_cache, max_lora_rank=settings.max_lora_rank)
    from arcsynth.workers.backends.vllm_engine import Engine

    return Engine(engine_config(settings, model))


def engine_config(settings: Settings, model: str) -> EngineConfig:
    """The vLLM engine's configuration from settings, for the resolved `model` (imports no vLLM)."""
    from arcsynth.workers.backends.vllm_engine import EngineConfig

    return EngineConfig(
        model=model, max_model_len=settings.max_model_len, enable_lora=settings.enable_lora,
        max_lora_rank=settings.max_lora_rank, max_loras=settings.max_loras, max_cpu_loras=settings.max_cpu_loras,
        dtype=settings.dtype, tensor_parallel_size=settings.tensor_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization, adapter_cache=settings.adapter_cache,
    )
