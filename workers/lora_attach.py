"""Attaching a job's LoRA to a resident base model, and what makes it cheap.

peft's `get_peft_model` spends most of its time in Python, walking the module tree and building a
wrapper per target module (about half a second for SmolLM2's 210 projections: most of a warm job's
overhead). So on the peft backend the LoRA modules built for one LoRA shape (rank, alpha, dropout,
target modules) are kept with the resident model, detached between jobs: a later job of the same
shape re-attaches them by restoring the snapshot taken right after they were built, then gives them
fresh weights. Every job, the first included, initialises its LoRA the same way: torch seeded
with `train.seed`, then peft's own `reset_lora_parameters` on each LoRA layer in module order (A
as `nn.Linear` would be, B zero), then the start adapter's weights if it has one. So the adapter
depends only on the request, whether the modules were built for this job or an earlier one.

Unsloth patches the model as it attaches a LoRA, so on that backend each job calls
`FastLanguageModel.get_peft_model` (or loads its start adapter) afresh. Either way the job ends with
the resident model's own snapshot restored, which detaches the LoRA without merging it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from arcsynth.common.json_file import read_json_object
from arcsynth.common.models import FinetuneRequest
from arcsynth.workers.resident_models import ModelSnapshot, Resident

POOLED_SHAPES = 2  # LoRA shapes kept per resident model; a run uses one
# adapter_config.json fields that decide which modules and tensors a LoRA has, and how it scales.
_STRUCTURE = ("peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "use_dora",
              "modules_to_save", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern",
              "fan_in_fan_out", "exclude_modules", "trainable_token_indices", "lora_bias")


def _shape(req: FinetuneRequest) -> tuple:
    return (req.lora.rank, req.lora.alpha, req.lora.dropout, tuple(sorted(req.lora.target_modules)))


def _structure(config: dict[str, Any]) -> dict[str, Any]:
    def norm(v: Any) -> Any:
        return sorted(v) if isinstance(v, (list, set, tuple)) else v

    return {k: norm(config.get(k)) for k in _STRUCTURE}


def _peft_lora(resident: Resident, req: FinetuneRequest) -> Any:
    """The resident model wrapped with LoRA modules of `req`'s shape: re-attached if kept, else built."""
    from peft import LoraConfig, get_peft_model

    pool = resident.extras.setdefault("loras", {})
    shape = _shape(req)
    if shape in pool:
        peft_model, attached = pool.pop(shape)
        attached.restore(peft_model)
    else:
        peft_model = get_peft_model(resident.model, LoraConfig(
            r=req.lora.rank, lora_alpha=req.lora.alpha, lora_dropout=req.lora.dropout,
            target_modules=list(req.lora.target_modules), task_type="CAUSAL_LM",
        ))
        attached = ModelSnapshot(peft_model)
        while len(pool) >= POOLED_SHAPES:
            pool.pop(next(iter(pool)))
    pool[shape] = (peft_model, attached)  # most recently used last
    return peft_model


def _fresh_weights(peft_model: Any, seed: int) -> None:
    """peft's default LoRA init (A as `nn.Linear`'s, B zero) on every LoRA layer in module order, seeded."""
    import torch
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(seed)
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            for name in module.lora_A:
                module.reset_lora_parameters(name, True)


def _load_start(peft_model: Any, start_from: str) -> bool:
    """Copy `start_from`'s weights into `peft_model` if its LoRA has the same structure; False if not."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    saved = read_json_object(Path(start_from) / "adapter_config.json")  # a FIFO there would hang the worker
    if _structure(saved) != _structure(peft_model.peft_config["default"].to_dict()):
        return False
    result = set_peft_model_state_dict(peft_model, load_peft_weights(start_from, device="cpu"))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ValueError(f"adapter {start_from} does not fit its own config: missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]}")
    return True


@contextmanager
def attached_lora(resident: Resident, req: FinetuneRequest, start_from: str, backend: str) -> Iterator[Any]:
    """The resident model with a trainable LoRA for `req`: fresh weights, or `start_from`'s.

    Must run inside `ResidentModels.borrow`, whose restore on exit detaches the LoRA. If the job
    fails, its kept LoRA modules are dropped too, so the next job of that shape builds them anew.
    """
    import torch
    from peft import PeftModel

    shape = _shape(req)
    try:
        if backend == "unsloth":
            from unsloth import FastLanguageModel

            torch.manual_seed(req.train.seed)
            if start_from:  # as unsloth's own loader does for an adapter folder
                peft_model = PeftModel.from_pretrained(resident.model, start_from, is_trainable=True)
                peft_model = FastLanguageModel.patch_peft_model(peft_model, use_gradient_checkpointing="unsloth")
            else:
                peft_model = FastLanguageModel.get_peft_model(
                    resident.model, r=req.lora.rank, lora_alpha=req.lora.alpha, lora_dropout=req.lora.dropout,
                    target_modules=list(req.lora.target_modules), random_state=req.train.seed,
                    use_gradient_checkpointing="unsloth",
                )
        else:
            peft_model = _peft_lora(resident, req)
            _fresh_weights(peft_model, req.train.seed)
            if start_from and not _load_start(peft_model, start_from):
                # A start adapter of another shape: its own config decides the LoRA, as it always did.
                resident.snapshot.restore(resident.model)  # detaches the kept modules, which stay kept
                torch.manual_seed(req.train.seed)
                peft_model = PeftModel.from_pretrained(resident.model, start_from, is_trainable=True)
        yield peft_model
    except BaseException:
        resident.extras.get("loras", {}).pop(shape, None)
        raise
