"""Training one LoRA on a resident base model: peft on any device, unsloth on a CUDA GPU.

Each job borrows its base model from a `ResidentModels` cache (loaded once per worker process),
attaches a seeded fresh LoRA (or its start adapter's weights, trainable; `lora_attach`), trains,
saves the adapter; the cache then restores the base model, which detaches the LoRA unmerged, and
checks it. So a job's adapter depends only on its request, not on the jobs the process ran before.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcsynth.common.model_store import resolve_model
from arcsynth.common.models import FinetuneRequest
from arcsynth.workers.lora_attach import attached_lora
from arcsynth.workers.resident_models import ModelKey, Resident, ResidentModels


@dataclass(frozen=True)
class Trained:
    """What a job's training gave: the final loss and where its time went."""

    loss: float
    train_s: float  # the optimisation loop alone (or TRL's `trainer.train()`)
    load_s: float  # loading the base model and tokenizer; 0.0 when it was resident


def total_steps(req: FinetuneRequest) -> int:
    """Optimiser steps: `train.epochs` passes over the examples when given, else `train.steps`."""
    if req.train.epochs is None:
        return req.train.steps
    return max(1, math.ceil(req.train.epochs * len(req.examples) / req.train.batch_size))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16() -> bool:
    """bf16 weights and mixed precision where the GPU has bf16 (as unsloth loads models); fp32 elsewhere."""
    import torch

    return _cuda() and torch.cuda.is_bf16_supported()


def model_key(req: FinetuneRequest, backend: str) -> ModelKey:
    """The resident model `req` trains on: two names for one local folder give one key."""
    path = resolve_model(req.base_model)
    if os.path.isdir(path):
        path = os.path.realpath(path)
    if backend == "unsloth":
        return ModelKey(path, "auto", "unsloth", req.train.max_seq_length)
    return ModelKey(path, "bfloat16" if _bf16() else "float32", "peft")


def _load_peft(key: ModelKey) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(key.path, dtype=getattr(torch, key.dtype))
    return model.to("cuda" if _cuda() else "cpu"), AutoTokenizer.from_pretrained(key.path)


def _load_unsloth(key: ModelKey) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel  # imported only after the capability check

    # dtype=None: bf16 where the GPU supports it, else fp16 (unsloth's own choice).
    return FastLanguageModel.from_pretrained(model_name=key.path, max_seq_length=key.max_seq_length, dtype=None,
                                             load_in_4bit=False)


def _tokenise(tokenizer: Any, req: FinetuneRequest) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per example; prompt tokens are masked so loss is on the completion only.

    An example whose prompt fills `max_seq_length` has no completion token left to learn from: it
    is dropped (as TRL's SFTTrainer drops fully masked examples), else its steps would train on
    nothing and report a NaN loss; a request none of whose examples fits is refused."""
    rows = []
    longest = 0
    for ex in req.examples:
        prompt = ex.prompt or tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(ex.completion + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[: req.train.max_seq_length]
        labels = ([-100] * len(p_ids) + c_ids)[: req.train.max_seq_length]
        longest = max(longest, len(p_ids))
        # Labels are shifted by one: a completion token counts only past the first position.
        if any(lab != -100 for lab in labels[1:]):
            rows.append((ids, labels))
    if not rows:
        raise ValueError(f"no training example has a completion token within max_seq_length "
                         f"{req.train.max_seq_length} (prompts of up to {longest} tokens)")
    return rows


def _completion_loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """Cross-entropy on completion tokens only; the LM head runs only where labels exist.

    The vocabulary projection is a large share of a small model's compute; skipping it on prompt
    positions makes CPU training about a quarter faster.
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _train_loop(model: Any, tokenizer: Any, req: FinetuneRequest) -> tuple[float, float]:
    """arcsynth's own loop (AdamW, constant rate): (final loss, seconds in the optimisation loop)."""
    import torch

    rows = _tokenise(tokenizer, req)
    device = next(model.parameters()).device
    rng = random.Random(req.train.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=req.train.learning_rate)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    loss_value = float("nan")
    start = time.perf_counter()
    for _ in range(total_steps(req)):
        batch = [rows[rng.randrange(len(rows))] for _ in range(req.train.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=device)
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
        loss = _completion_loss(model, ids, mask, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
    return loss_value, time.perf_counter() - start


def _train_sft(model: Any, tokenizer: Any, req: FinetuneRequest, scratch: Path) -> tuple[float, float]:
    """TRL's SFTTrainer on prompt/completion conversations: loss on the completion only.

    The unsloth path trains this way (as unsloth documents it); `trainer="trl"` makes the peft
    path use it too, so the trainer itself is checked on a CPU. Returns (final loss, seconds in
    `trainer.train()`).
    """
    trainer = sft_trainer(model, tokenizer, req, scratch)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return (float(losses[-1]) if losses else float("nan")), seconds


def sft_trainer(model: Any, tokenizer: Any, req: FinetuneRequest, scratch: Path) -> Any:
    """The SFTTrainer for `req`, its dataset tokenised (with a completion mask), not yet trained."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # Chat examples as conversations; plain-prompt examples (`base` format) as text, as TRL takes both.
    data = Dataset.from_list([{"prompt": ex.prompt, "completion": ex.completion} if ex.prompt else
                              {"prompt": ex.messages, "completion": [{"role": "assistant", "content": ex.completion}]}
                              for ex in req.examples])
    args = SFTConfig(output_dir=str(scratch), max_steps=total_steps(req), per_device_train_batch_size=req.train.batch_size,
                     learning_rate=req.train.learning_rate, max_length=req.train.max_seq_length,
                     completion_only_loss=True, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1,
                     save_strategy="no", report_to=[], seed=req.train.seed, disable_tqdm=True,
                     use_cpu=not _cuda(), bf16=_bf16(), fp16=False)
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def _save_tokenizer(resident: Resident, tokenizer: Any, out: Path) -> None:
    """Write the tokenizer's files beside the adapter: the resident tokenizer's once serialised, then copied."""
    if tokenizer is not resident.tokenizer:
        tokenizer.save_pretrained(out)
        return
    files = resident.extras.get("tokenizer_files")
    if files is None:
        before = set(os.listdir(out))
        tokenizer.save_pretrained(out)
        resident.extras["tokenizer_files"] = {name: (out / name).read_bytes() for name in sorted(set(os.listdir(out)) - before)}
        return
    for name, data in files.items():
        (out / name).write_bytes(data)


def train_resident(req: FinetuneRequest, out: Path, start_from: str, backend: str, models: ResidentModels) -> Trained:
    """Train `req`'s LoRA on its resident base model and save it (adapter and tokenizer) into `out`.

    The unsloth backend and `trainer="trl"` train with TRL's SFTTrainer on a copy of the resident
    tokenizer (the trainer may set its padding); arcsynth's loop only reads the tokenizer and uses
    the resident one. Raises whatever training raises; the base model is restored either way.
    """
    key = model_key(req, backend)
    loads = models.loads[key]
    start = time.perf_counter()
    with models.borrow(key, _load_unsloth if backend == "unsloth" else _load_peft) as resident:
        load_s = time.perf_counter() - start if models.loads[key] > loads else 0.0
        sft = backend == "unsloth" or req.trainer == "trl"
        tokenizer = copy.deepcopy(resident.tokenizer) if sft else resident.tokenizer
        with attached_lora(resident, req, start_from, backend) as model:
            if sft:
                loss, train_s = _train_sft(model, tokenizer, req, out.parent / "trainer")
            else:
                loss, train_s = _train_loop(model, tokenizer, req)
            model.save_pretrained(out)
        _save_tokenizer(resident, tokenizer, out)
    return Trained(loss, train_s, load_s)
