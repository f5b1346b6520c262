"""Fine-tune worker: trains per-task LoRA adapters and writes them to the artifact root."""

from __future__ import annotations

from arcsynth.common.celery_app import FINETUNE, app
from arcsynth.common.models import FinetuneRequest
from arcsynth.common.settings import get_settings
from arcsynth.workers.guard import GuardedTask
from arcsynth.workers.lora_training import train_adapter


@app.task(name=FINETUNE, base=GuardedTask, time_limit=get_settings().finetune_time_limit_s)
def finetune(request: dict) -> dict:
    req = FinetuneRequest.model_validate(request)
    s = get_settings()
    return train_adapter(req, s.artifact_root, s.adapter_cache).model_dump()
