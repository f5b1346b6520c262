"""Fine-tune worker: trains LoRA adapters and writes them to the artifact root."""

from __future__ import annotations

from celery import Celery

from arcsynth.common.jobs import FINETUNE, FinetuneRequest, parse_message
from arcsynth.common.settings import Settings
from arcsynth.workers.guard import GuardedTask
from arcsynth.workers.lora_training import train_adapter
from arcsynth.workers.resident_models import process_models


def register(app: Celery, settings: Settings) -> None:
    """Add the fine-tune job to `app`."""

    @app.task(name=FINETUNE, base=GuardedTask, time_limit=settings.finetune_time_limit_s)
    def finetune_job(request: dict) -> dict:
        req = parse_message(FinetuneRequest, request, "fine-tune request")  # a bad message fails its job in one line
        resident = process_models(settings.finetune_resident_models)
        return train_adapter(req, settings.artifact_root, settings.adapter_cache, resident).model_dump(mode="json")
