"""Test-time LoRA training: peft everywhere, unsloth where a CUDA GPU and unsloth are present.

Both backends take the same `FinetuneRequest` and write a standard PEFT adapter folder that vLLM
loads per request. The folder name is a hash of the request, so a redelivered job finds its
adapter already there and does not train twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from common.model_store import resolve_model
from common.models import FinetuneRequest, FinetuneResult

MANIFEST = "arcsynth_manifest.json"


class BackendUnavailable(RuntimeError):
    pass


def unsloth_available() -> tuple[bool, str]:
    """Whether unsloth can run here, and if not, why (unsloth refuses to import without a GPU)."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "unsloth needs a CUDA GPU and none is visible"
    if importlib.util.find_spec("unsloth") is None:
        return False, "unsloth is not installed (pip install 'arcsynth[finetune-gpu]')"
    return True, ""


def choose_backend(requested: str) -> str:
    ok, why = unsloth_available()
    if requested == "unsloth" and not ok:
        raise BackendUnavailable(f"backend 'unsloth' requested but {why}")
    if requested == "auto":
        return "unsloth" if ok else "peft"
    return requested


def request_hash(req: FinetuneRequest) -> str:
    return hashlib.sha256(req.model_dump_json().encode()).hexdigest()[:20]


def adapter_dir(req: FinetuneRequest, artifact_root: str) -> Path:
    return Path(artifact_root) / "adapters" / request_hash(req)


def _tokenise(tokenizer, req: FinetuneRequest) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per example; prompt tokens are masked so loss is on the completion only."""
    rows = []
    for ex in req.examples:
        prompt = tokenizer.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(ex.completion + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[: req.train.max_seq_length]
        labels = ([-100] * len(p_ids) + c_ids)[: req.train.max_seq_length]
        rows.append((ids, labels))
    return rows


def _completion_loss(model, ids, mask, labels):
    """Cross-entropy on completion tokens only; the LM head runs only where labels exist.

    The vocabulary projection is a large share of a small model's compute; skipping it on prompt
    positions makes CPU training about a quarter faster.
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _train_loop(model, tokenizer, req: FinetuneRequest, device: str) -> float:
    import torch

    rows = _tokenise(tokenizer, req)
    rng = random.Random(req.train.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=req.train.learning_rate)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    loss_value = float("nan")
    for _ in range(req.train.steps):
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
    return loss_value


def _train_peft(req: FinetuneRequest, out: Path) -> float:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(req.train.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = resolve_model(req.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    if req.start_adapter:
        model = PeftModel.from_pretrained(model, req.start_adapter, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(
            r=req.lora.rank, lora_alpha=req.lora.alpha, lora_dropout=req.lora.dropout,
            target_modules=list(req.lora.target_modules), task_type="CAUSAL_LM",
        ))
    loss = _train_loop(model, tokenizer, req, device)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return loss


def _train_unsloth(req: FinetuneRequest, out: Path) -> float:
    from unsloth import FastLanguageModel  # imported only after the capability check

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=req.start_adapter or resolve_model(req.base_model),
        max_seq_length=req.train.max_seq_length, load_in_4bit=False,
    )
    if not req.start_adapter:
        model = FastLanguageModel.get_peft_model(
            model, r=req.lora.rank, lora_alpha=req.lora.alpha, lora_dropout=req.lora.dropout,
            target_modules=list(req.lora.target_modules), random_state=req.train.seed,
        )
    loss = _train_loop(model, tokenizer, req, "cuda")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return loss


def train_adapter(req: FinetuneRequest, artifact_root: str) -> FinetuneResult:
    """Train (or find already trained) the adapter for `req`; return where it is."""
    target = adapter_dir(req, artifact_root)
    manifest = target / MANIFEST
    if manifest.exists():
        m = json.loads(manifest.read_text())
        return FinetuneResult(adapter=str(target), backend=m["backend"], steps=m["steps"],
                              final_loss=m["final_loss"], seconds=m["seconds"], reused=True)
    backend = choose_backend(req.backend)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".training-") as tmp:
        staging = Path(tmp) / "adapter"
        loss = (_train_unsloth if backend == "unsloth" else _train_peft)(req, staging)
        seconds = time.monotonic() - start
        data_hash = hashlib.sha256(
            json.dumps([e.model_dump() for e in req.examples], sort_keys=True).encode()
        ).hexdigest()
        (staging / MANIFEST).write_text(json.dumps({
            "base_model": req.base_model, "backend": backend, "lora": req.lora.model_dump(),
            "train": req.train.model_dump(), "steps": req.train.steps, "final_loss": loss,
            "data_sha256": data_hash, "seconds": seconds, "start_adapter": req.start_adapter,
        }, indent=2))
        try:
            os.rename(staging, target)  # atomic: readers never see a half-written adapter
        except OSError:
            if not manifest.exists():  # lost a race with an identical job: keep theirs
                shutil.rmtree(target, ignore_errors=True)
                os.rename(staging, target)
    return FinetuneResult(adapter=str(target), backend=backend, steps=req.train.steps,
                          final_loss=loss, seconds=seconds)
