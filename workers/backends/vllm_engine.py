"""One vLLM engine per worker process, shared by all of the worker's task threads.

`vllm.LLM` is not thread-safe, so the engine is an `AsyncLLM` owned by one event-loop thread;
Celery's task threads submit coroutines to that loop and block on their own futures. vLLM then
batches requests from different ARC tasks together. The shape follows `LLM.generate`: prompts in,
completions out, an optional `LoRARequest` per call.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from arcsynth.common.lifetime import children_die_with_me
from arcsynth.common.models import Completion, SamplingConfig
from arcsynth.workers.backends.adapters import check_adapter, local_adapter
from arcsynth.workers.backends.base import Prompt, PromptTooLong, chat_ids


@dataclass(frozen=True)
class EngineConfig:
    model: str
    adapter_cache: str  # where remote adapters are fetched to (ARCSYNTH_ADAPTER_CACHE)
    max_model_len: int = 8192
    enable_lora: bool = True
    max_lora_rank: int = 16
    max_loras: int | None = None  # None: 16 on a GPU, 4 on CPU
    max_cpu_loras: int | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1  # GPUs the engine spans (ARCSYNTH_TENSOR_PARALLEL_SIZE)
    seed: int = 0


def _on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def engine_args(c: EngineConfig, on_gpu: bool) -> Any:
    """The `AsyncEngineArgs` an engine is built from (building them starts nothing): the config's
    values, with the device's defaults for memory fraction and adapter slots where it leaves them open."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    util = c.gpu_memory_utilization or (0.9 if on_gpu else 0.2)
    max_loras = c.max_loras or (16 if on_gpu else 4)
    return AsyncEngineArgs(
        model=c.model, max_model_len=c.max_model_len, enable_lora=c.enable_lora,
        max_lora_rank=c.max_lora_rank, max_loras=max_loras, dtype=c.dtype,
        # vLLM keeps adapters in an LRU: max_loras on the device per batch, max_cpu_loras in memory.
        max_cpu_loras=c.max_cpu_loras or 4 * max_loras,
        gpu_memory_utilization=util, seed=c.seed,
        # The engine spans this many GPUs (CUDA_VISIBLE_DEVICES holds the worker's group of them).
        tensor_parallel_size=c.tensor_parallel_size,
    )


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        # The engine core runs in child processes; they must not outlive this worker.
        children_die_with_me()
        self.config = config
        self._lora_ids: dict[str, int] = {}
        self._ids_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        # Build the engine on the loop thread: its processes are children of a thread that lives
        # as long as the worker, which is what PR_SET_PDEATHSIG watches.
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self) -> None:
        from transformers import AutoTokenizer
        from vllm.v1.engine.async_llm import AsyncLLM

        self.on_gpu = _on_gpu()
        self.tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        self.llm = AsyncLLM.from_engine_args(engine_args(self.config, self.on_gpu))

    def lora_request(self, adapter: str) -> Any:
        from vllm.lora.request import LoRARequest

        adapter = local_adapter(adapter, self.config.adapter_cache)
        check_adapter(adapter, self.config.model, self.config.max_lora_rank)
        with self._ids_lock:
            lora_id = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, adapter)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        return chat_ids(self.tokenizer, prompt, self.config.model)

    async def _generate(self, prompt_ids: list[int], sampling: SamplingConfig, lora: Any) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        max_tokens = min(sampling.max_tokens, self.config.max_model_len - len(prompt_ids))
        # vLLM's CPU backend aborts the engine ("CPU Generator does not use offset") when a
        # seeded request's prefill is chunked; there the engine-wide seed is all we can offer.
        seed = sampling.seed if self.on_gpu else None
        params = SamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, min_p=sampling.min_p,
            max_tokens=max_tokens, seed=seed,
            output_kind=RequestOutputKind.FINAL_ONLY,  # with n>1, streamed items can hold fewer than n
        )
        final = None
        async for out in self.llm.generate(
            {"prompt_token_ids": prompt_ids}, params, request_id=uuid.uuid4().hex,
            lora_request=lora,
        ):
            final = out
        assert final is not None
        return [
            Completion(text=o.text, prompt_tokens=len(prompt_ids), completion_tokens=len(o.token_ids),
                       finish_reason=o.finish_reason)
            for o in final.outputs
        ]

    def generate(self, prompt: Prompt, sampling: SamplingConfig, adapter: str = "",
                 task_id: str = "") -> tuple[list[Completion], float]:
        """Thread-safe: sample `sampling.n` completions for one prompt (chat messages or plain text)."""
        ids = self.prompt_ids(prompt)
        if len(ids) >= self.config.max_model_len:
            raise PromptTooLong(
                f"prompt has {len(ids)} tokens; the model's context is {self.config.max_model_len}"
            )
        lora = self.lora_request(adapter) if adapter else None  # fetched and checked in this thread
        start = time.monotonic()
        fut = asyncio.run_coroutine_threadsafe(self._generate(ids, sampling, lora), self._loop)
        return fut.result(), time.monotonic() - start

    def shutdown(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self.llm.shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
