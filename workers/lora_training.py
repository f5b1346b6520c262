"""Test-time LoRA training: peft everywhere, unsloth where a CUDA GPU and unsloth are present.

Both backends take the same `FinetuneRequest` and write a standard PEFT adapter folder that vLLM
loads per request. The folder name is a hash of the request, so a redelivered job finds its
adapter already there and does not train twice. The base model stays loaded in the worker process
between jobs (`resident_models`); each job attaches and detaches its own LoRA (`lora_backends`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from arcsynth.common.json_file import read_json_object
from arcsynth.common.models import FinetuneRequest, FinetuneResult
from arcsynth.workers.backends.adapters import local_adapter
from arcsynth.workers.lora_backends import Trained, sft_trainer, total_steps, train_resident
from arcsynth.workers.resident_models import ResidentModels, process_models

__all__ = ["BackendUnavailable", "choose_backend", "sft_trainer", "total_steps", "train_adapter", "unsloth_available"]

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
    """Where a local artifact root keeps the request's adapter: an absolute path, since it is recorded in
    the run's files and read from other working directories (`arcsynth report` elsewhere), as payloads' are."""
    return Path(os.path.abspath(artifact_root)) / "adapters" / request_hash(req)


def _manifest(req: FinetuneRequest, backend: str, trained: Trained, seconds: float) -> str:
    """The adapter's manifest. `seconds` is the whole job; `train_seconds` the optimisation loop
    alone and `load_seconds` loading the base model (0 when it was resident), so a job's
    overhead is `seconds - train_seconds`."""
    data_hash = hashlib.sha256(json.dumps([e.model_dump() for e in req.examples], sort_keys=True).encode()).hexdigest()
    return json.dumps({
        "base_model": req.base_model, "backend": backend, "lora": req.lora.model_dump(),
        "train": req.train.model_dump(), "steps": total_steps(req), "final_loss": trained.loss,
        "data_sha256": data_hash, "seconds": seconds, "train_seconds": trained.train_s,
        "load_seconds": trained.load_s, "start_adapter": req.start_adapter,
        "sources": req.sources, "examples": len(req.examples), "prompt_format": req.prompt_format,
    }, indent=2)


def _reused(manifest_text: str, adapter: str) -> FinetuneResult:
    m = json.loads(manifest_text)
    return FinetuneResult(adapter=adapter, backend=m["backend"], steps=m["steps"], final_loss=m["final_loss"],
                          seconds=m["seconds"], reused=True)


def check_start_format(adapter: str, fmt: str) -> None:
    """Refuse to go on training an adapter trained in another prompt format (its manifest says which)."""
    manifest = Path(adapter) / MANIFEST
    if manifest.is_file():
        trained = read_json_object(manifest).get("prompt_format", "arcsynth")  # JsonFileError is a ValueError
        if trained != fmt:
            raise ValueError(f"start adapter {adapter} was trained with prompt format {trained!r}, "
                             f"this request uses {fmt!r}")


def train_adapter(req: FinetuneRequest, artifact_root: str, adapter_cache: str = ".cache/adapters",
                  resident: ResidentModels | None = None) -> FinetuneResult:
    """Train (or find already trained) the adapter for `req`; return where it is.

    `artifact_root` is a local folder or any fsspec URL (`s3://bucket/arcsynth`): the adapter is
    trained locally, then uploaded with its manifest last, so a manifest means a complete adapter.
    The base model is borrowed from `resident` (this process's cache, `process_models()`, by
    default), loaded there only if absent, and left there exactly as it was loaded.
    """
    start_from = local_adapter(req.start_adapter, adapter_cache) if req.start_adapter else ""
    if start_from:
        check_start_format(start_from, req.prompt_format)
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
    models = resident if resident is not None else process_models()
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(dir=local_parent, prefix=".training-") as tmp:
            staging = Path(tmp) / "adapter"
            trained = train_resident(req, staging, start_from, backend, models)
            seconds = time.monotonic() - start
            manifest = _manifest(req, backend, trained, seconds)
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
    return FinetuneResult(adapter=adapter, backend=backend, steps=total_steps(req), final_loss=trained.loss,
                          seconds=seconds)
