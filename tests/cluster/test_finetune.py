"""LoRA training on CPU with peft: local and fsspec artifact roots, reuse, epochs, the unsloth check."""

from __future__ import annotations

import json
import os

import pytest

from arcsynth.common.models import FinetuneRequest, LoraConfig, TrainConfig, TrainingExample
from arcsynth.workers.lora_training import BackendUnavailable, choose_backend, total_steps, train_adapter

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


def test_a_relative_artifact_root_records_the_adapter_by_its_absolute_path(smollm2, tmp_path, monkeypatch):
    """The adapter's path goes into the run's files, read later from other working directories
    (`arcsynth report` elsewhere found no manifest behind `artifacts/adapters/...`)."""
    monkeypatch.chdir(tmp_path)
    trained = train_adapter(request(), "artifacts", str(tmp_path / "cache"))
    assert os.path.isabs(trained.adapter) and trained.adapter.startswith(str(tmp_path / "artifacts" / "adapters") + "/")
    assert os.path.isfile(os.path.join(trained.adapter, "arcsynth_manifest.json"))


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


def test_trl_sft_trainer_masks_the_prompt_and_writes_a_standard_adapter(smollm2, tmp_path):
    """The trainer the unsloth path uses (TRL's SFTTrainer), run here on CPU with peft."""
    pytest.importorskip("trl")
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arcsynth.common.model_store import resolve_model
    from arcsynth.workers.lora_training import sft_trainer

    req = request().model_copy(update={"trainer": "trl"})
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model("smollm2")),
                           PeftLora(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    row = sft_trainer(model, tokenizer, req, tmp_path / "scratch").train_dataset[0]
    prompt_len = len(tokenizer.apply_chat_template(EXAMPLE.messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"])
    labels = row["labels"]
    assert all(x == -100 for x in labels[:prompt_len]) and all(x != -100 for x in labels[prompt_len:])  # completion only
    assert tokenizer.decode([x for x in labels if x != -100]).startswith("```python")

    trained = train_adapter(req, str(tmp_path / "artifacts"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(trained.adapter))
    manifest = json.loads(open(os.path.join(trained.adapter, "arcsynth_manifest.json")).read())
    assert manifest["steps"] == 2 and manifest["train"] and trained.final_loss == trained.final_loss  # not NaN
