"""transformers backend: plain `generate` on any torch device, for machines without vLLM.

Slower than vLLM (no continuous batching), but the same interface, adapters included: each
adapter is loaded once into the one `PeftModel` and selected per request.
"""

from __future__ import annotations

import threading
import time

from arcsynth.common.models import Completion, SamplingConfig
from arcsynth.workers.backends.adapters import check_adapter, local_adapter
from arcsynth.workers.backends.base import Prompt, PromptTooLong, chat_ids


class TransformersBackend:
    def __init__(self, model: str, adapter_cache: str, max_model_len: int = 8192,
                 max_lora_rank: int = 64) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name = model
        self.max_model_len = max_model_len
        self.adapter_cache = adapter_cache
        self.max_lora_rank = max_lora_rank
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model).to(self.device).eval()
        self.adapters: dict[str, str] = {}
        self._lock = threading.Lock()  # one generate at a time: the model object is shared

    def _select(self, adapter: str):
        from peft import PeftModel

        if not adapter:
            if hasattr(self.model, "disable_adapter"):
                return self.model.disable_adapter()
            return _NullContext()
        path = local_adapter(adapter, self.adapter_cache)
        check_adapter(path, self.model_name, self.max_lora_rank)
        if path not in self.adapters:
            name = f"a{len(self.adapters) + 1}"
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            self.adapters[path] = name
        self.model.set_adapter(self.adapters[path])
        return _NullContext()

    def generate(self, prompt: Prompt, sampling: SamplingConfig, adapter: str = "",
                 task_id: str = "") -> tuple[list[Completion], float]:
        import torch

        ids = torch.tensor([chat_ids(self.tokenizer, prompt, self.model_name)], device=self.device)
        if ids.shape[1] >= self.max_model_len:
            raise PromptTooLong(f"prompt has {ids.shape[1]} tokens; the model's context is {self.max_model_len}")
        start = time.monotonic()
        with self._lock, torch.no_grad(), self._select(adapter):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            greedy = sampling.temperature == 0
            out = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=not greedy,
                temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
                min_p=None if greedy or not sampling.min_p else sampling.min_p,
                top_k=None, max_new_tokens=min(sampling.max_tokens, self.max_model_len - ids.shape[1]),
                num_return_sequences=sampling.n, pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        completions = []
        for seq in out[:, ids.shape[1]:]:
            tokens = seq.tolist()
            eos = self.tokenizer.eos_token_id
            finish = "stop" if eos in tokens else "length"
            if eos in tokens:
                tokens = tokens[: tokens.index(eos)]
            completions.append(Completion(text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                                          prompt_tokens=ids.shape[1], completion_tokens=len(tokens),
                                          finish_reason=finish))
        return completions, time.monotonic() - start

    def shutdown(self) -> None:
        pass


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
