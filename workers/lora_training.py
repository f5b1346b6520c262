"""Test-time LoRA training: peft everywhere, unsloth where a CUDA GPU and unsloth are present.

Both backends take the same `FinetuneRequest` and write a standard PEFT adapter folder that vLLM
loads per request. The folder name is a hash of the request, so a redelivered job finds its
adapter already there and does not train twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from arcsynth.common.model_store import resolve_model
from arcsynth.common.models import FinetuneRequest, FinetuneResult
from arcsynth.workers.backends.adapters import local_adapter

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
    return loss_value


def _train_sft(model, tokenizer, req: FinetuneRequest, scratch: Path) -> float:
    """TRL's SFTTrainer on prompt/completion conversations: loss on the completion only.

    The unsloth path trains this way (as unsloth documents it); `trainer="trl"` makes the peft
    path use it too, so the trainer itself is checked on a CPU.
    """
    trainer = sft_trainer(model, tokenizer, req, scratch)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return float(losses[-1]) if losses else float("nan")


def sft_trainer(model, tokenizer, req: FinetuneRequest, scratch: Path):
    """The SFTTrainer for `req`, its dataset tokenised (with a completion mask), not yet trained."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": ex.messages, "completion": [{"role": "assistant", "content": ex.completion}]}
                              for ex in req.examples])
    args = SFTConfig(output_dir=str(scratch), max_steps=total_steps(req), per_device_train_batch_size=req.train.batch_size,
                     learning_rate=req.train.learning_rate, max_length=req.train.max_seq_length,
                     completion_only_loss=True, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1,
                     save_strategy="no", report_to=[], seed=req.train.seed, disable_tqdm=True,
                     use_cpu=not _cuda(), bf16=_bf16(), fp16=False)
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16() -> bool:
    """Mixed precision where the GPU has bf16 (as unsloth loads models); full fp32 on CPU."""
    import torch

    return _cuda() and torch.cuda.is_bf16_supported()


def _train_peft(req: FinetuneRequest, out: Path, start_from: str) -> float:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(req.train.seed)
    device = "cuda" if _cuda() else "cpu"
    base = resolve_model(req.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    if start_from:
        model = PeftModel.from_pretrained(model, start_from, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(
            r=req.lora.rank, lora_alpha=req.lora.alpha, lora_dropout=req.lora.dropout,
            target_modules=list(req.lora.target_modules), task_type="CAUSAL_LM",
        ))
    if req.trainer == "trl":
        loss = _train_sft(model, tokenizer, req, out.parent / "trainer")
    else:
        loss = _train_loop(model, tokenizer, req, device)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return loss


def _train_unsloth(req: FinetuneRequest, out: Path, start_from: str) -> float:
    from unsloth import FastLanguageModel  # imported only after the capability check

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=start_from or resolve_model(req.base_model),
        max_seq_length=req.train.max_seq_length, load_in_4bit=False,
    )
    if not start_from:
        model = FastLanguageModel.get_peft_model(
            model, r=req.lora.rank, lora_alpha=req.lora.alpha, lora_dropout=req.lora.dropout,
            target_modules=list(req.lora.target_modules), random_state=req.train.seed,
        )
    loss = _train_sft(model, tokenizer, req, out.parent / "trainer")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return loss


def _manifest(req: FinetuneRequest, backend: str, loss: float, seconds: float) -> str:
    data_hash = hashlib.sha256(json.dumps([e.model_dump() for e in req.examples], sort_keys=True).encode()).hexdigest()
    return json.dumps({
        "base_model": req.base_model, "backend": backend, "lora": req.lora.model_dump(),
        "train": req.train.model_dump(), "steps": total_steps(req), "final_loss": loss,
        "data_sha256": data_hash, "seconds": seconds, "start_adapter": req.start_adapter,
    }, indent=2)


def total_steps(req: FinetuneRequest) -> int:
    """Optimiser steps: `train.epochs` passes over the examples when given, else `train.steps`."""
    if req.train.epochs is None:
        return req.train.steps
    return max(1, math.ceil(req.train.epochs * len(req.examples) / req.train.batch_size))


def _reused(manifest_text: str, adapter: str) -> FinetuneResult:
    m = json.loads(manifest_text)
    return FinetuneResult(adapter=adapter, backend=m["backend"], steps=m["steps"], final_loss=m["final_loss"],
                          seconds=m["seconds"], reused=True)


def train_adapter(req: FinetuneRequest, artifact_root: str, adapter_cache: str = ".cache/adapters") -> FinetuneResult:
    """Train (or find already trained) the adapter for `req`; return where it is.

    `artifact_root` is a local folder or any fsspec URL (`s3://bucket/arcsynth`): the adapter is
    trained locally, then uploaded with its manifest last, so a manifest means a complete adapter.
    """
    start_from = local_adapter(req.start_adapter, adapter_cache) if req.start_adapter else ""
    remote = "://" in artifact_root
    if remote:
        import fsspec

        url = f"{artifact_root.rstrip('/')}/adapters/{request_hash(req)}"
        fs, path = fsspec.core.url_to_fs(url)
        if fs.exists(f"{path}/{MANIFEST}"):
            return _reused(fs.cat(f"{path}/{MANIFEST}").decode(), url)
        local_parent = Path(tempfile.mkdtemp(prefix="arcsynth-train-"))
    else:
        target = adapter_dir(req, artifact_root)
        if (target / MANIFEST).exists():
            return _reused((target / MANIFEST).read_text(), str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        local_parent = target.parent
    backend = choose_backend(req.backend)
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(dir=local_parent, prefix=".training-") as tmp:
            staging = Path(tmp) / "adapter"
            loss = (_train_unsloth if backend == "unsloth" else _train_peft)(req, staging, start_from)
            seconds = time.monotonic() - start
            manifest = _manifest(req, backend, loss, seconds)
            if remote:
                fs.makedirs(path, exist_ok=True)  # a no-op on object stores
                for f in sorted(staging.iterdir()):
                    fs.put(str(f), f"{path}/{f.name}")
                fs.pipe(f"{path}/{MANIFEST}", manifest.encode())  # last: marks the upload complete
                adapter = url
            else:
                (staging / MANIFEST).write_text(manifest)
                try:
                    os.rename(staging, target)  # atomic: readers never see a half-written adapter
                except OSError:
                    if not (target / MANIFEST).exists():  # lost a race with an identical job: keep theirs
                        shutil.rmtree(target, ignore_errors=True)
                        os.rename(staging, target)
                adapter = str(target)
    finally:
        if remote:
            shutil.rmtree(local_parent, ignore_errors=True)
    return FinetuneResult(adapter=adapter, backend=backend, steps=total_steps(req), final_loss=loss, seconds=seconds)
