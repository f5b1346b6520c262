"""Test adapters made with peft, without training."""

from __future__ import annotations

from pathlib import Path


def untrained_adapter(base_model: str, path: Path, rank: int) -> str:
    """A fresh LoRA: peft initialises B to zero, so it must leave the base model's outputs unchanged."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model),
                           LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(path)
    return str(path)
