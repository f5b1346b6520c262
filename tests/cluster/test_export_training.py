"""`export --format hf` -> `datasets.load_from_disk` -> TRL's SFTTrainer on CPU with SmolLM2 -> a LoRA adapter."""

from __future__ import annotations

import json
import math

import pytest

from arcsynth.producer.export import export_run
from tests.support.crafted import SWAP, learning_candidates, write_run


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, two OpenMP threads spin against each other (6x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_exported_data_trains_a_lora_adapter_with_sft_trainer(smollm2, tmp_path, one_thread):
    from datasets import load_from_disk
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    run = write_run(tmp_path / "run", [SWAP], {"swap": learning_candidates()}, model="smollm2").path
    result = export_run(run, tmp_path / "data", "hf")
    assert (result.relabelled, result.refinements) == (2, 1)

    data = load_from_disk(str(tmp_path / "data"))  # as exported: TRL reads prompt/completion, ignores the rest
    args = SFTConfig(output_dir=str(tmp_path / "trainer"), max_steps=3, per_device_train_batch_size=1, max_length=512,
                     learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                     disable_tqdm=True, seed=0, bf16=False, model_init_kwargs={"dtype": "float32"})  # CPU: no bf16
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=smollm2, args=args, train_dataset=data, peft_config=lora)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses)

    trainer.save_model(str(tmp_path / "adapter"))
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
