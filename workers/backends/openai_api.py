"""OpenAI-compatible backend: any endpoint that speaks `/v1/chat/completions`, `vllm serve` included.

Adapters are loaded through vLLM's runtime LoRA endpoint (`/v1/load_lora_adapter`, enabled on the
server with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) and then addressed as models by name. The API
key comes from settings only.
"""

from __future__ import annotations

import hashlib
import threading
import time

from arcsynth.common.models import Completion, SamplingConfig
from arcsynth.workers.backends.base import AdapterError


class OpenAIBackend:
    def __init__(self, settings) -> None:
        import openai

        if not settings.openai_base_url:
            raise ValueError("ARCSYNTH_BACKEND=openai needs ARCSYNTH_OPENAI_BASE_URL")
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "EMPTY"
        self.client = openai.OpenAI(base_url=settings.openai_base_url, api_key=key, max_retries=2)
        self.model = settings.openai_model or settings.model
        self.loaded: set[str] = set()
        self._lock = threading.Lock()

    def _adapter_model(self, adapter: str) -> str:
        name = "arcsynth-" + hashlib.sha256(adapter.encode()).hexdigest()[:16]
        with self._lock:
            if name not in self.loaded:
                resp = self.client.post("/load_lora_adapter", body={"lora_name": name, "lora_path": adapter},
                                        cast_to=object)
                if isinstance(resp, dict) and resp.get("error"):
                    raise AdapterError(f"adapter {adapter}: the server refused it: {resp['error']}")
                self.loaded.add(name)
        return name

    def generate(self, prompt: list[dict[str, str]] | str, sampling: SamplingConfig, adapter: str = "",
                 task_id: str = "") -> tuple[list[Completion], float]:
        """Chat messages go to the chat completions API; a plain prompt (`base` format) to completions."""
        model = self._adapter_model(adapter) if adapter else self.model
        start = time.monotonic()
        common = dict(model=model, n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                      max_tokens=sampling.max_tokens, seed=sampling.seed,
                      extra_body={"min_p": sampling.min_p} if sampling.min_p else None)
        if isinstance(prompt, str):
            resp = self.client.completions.create(prompt=prompt, **common)
            texts = [(c.text or "", c.finish_reason) for c in resp.choices]
        else:
            resp = self.client.chat.completions.create(messages=prompt, **common)
            texts = [(c.message.content or "", c.finish_reason) for c in resp.choices]
        usage = resp.usage
        per = (usage.completion_tokens // max(1, len(texts))) if usage else 0
        return [Completion(text=text, prompt_tokens=usage.prompt_tokens if usage else 0, completion_tokens=per,
                           finish_reason=reason) for text, reason in texts], time.monotonic() - start

    def shutdown(self) -> None:
        self.client.close()
