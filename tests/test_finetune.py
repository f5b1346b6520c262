"""LoRA training on CPU with peft: local and fsspec artifact roots, reuse, epochs, the unsloth check."""

from __future__ import annotations

import json
import os

import pytest

from common.models import FinetuneRequest, LoraConfig, TrainConfig, TrainingExample
from workers.lora_training import BackendUnavailable, choose_backend, total_steps, train_adapter

EXAMPLE = TrainingExample(messages=[{"role": "user", "content": "Flip it."}],
                          completion="```python\ndef transform(grid):\n    return grid[::-1]\n```")


def request(**train) -> FinetuneRequest:
    return FinetuneRequest(base_model="smollm2", examples=[EXAMPLE, EXAMPLE], lora=LoraConfig(rank=4, alpha=8),
                           train=TrainConfig(**{"steps": 2, "batch_size": 1, **train}))


def test_fsspec_artifact_root_uploads_the_adapter_with_its_manifest_last_and_reuses_it(smollm2, tmp_path):
    root = "file://" + str(tmp_path / "bucket")
    first = train_adapter(request(), root, str(tmp_path / "cache"))
    assert first.adapter.startswith(root + "/adapters/") and not first.reused
    folder = first.adapter.removeprefix("file://")
    assert {"adapter_config.json", "adapter_model.safetensors", "arcsynth_manifest.json"} <= set(os.listdir(folder))
    manifest = json.loads(open(os.path.join(folder, "arcsynth_manifest.json")).read())
    assert manifest["steps"] == 2 and manifest["backend"] == "peft"
    again = train_adapter(request(), root, str(tmp_path / "cache"))
    assert again.reused and again.adapter == first.adapter

    # Continue training from that remote adapter: it is fetched into the cache first.
    follow = train_adapter(request().model_copy(update={"start_adapter": first.adapter}), str(tmp_path / "local"),
                           str(tmp_path / "cache"))
    assert json.loads(open(os.path.join(follow.adapter, "arcsynth_manifest.json")).read())["start_adapter"] == first.adapter


def test_epochs_set_the_number_of_steps():
    assert total_steps(request()) == 2
    assert total_steps(request(epochs=3, batch_size=2)) == 3
    assert total_steps(request(epochs=0.1)) == 1


def test_unsloth_needs_a_cuda_gpu_and_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    assert choose_backend("auto") == "peft"
    with pytest.raises(BackendUnavailable, match="unsloth needs a CUDA GPU"):
        choose_backend("unsloth")
