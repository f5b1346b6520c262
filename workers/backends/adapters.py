"""Adapters by path or URL: local folders as they are, remote ones (any fsspec URL) fetched once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from arcsynth.workers.backends.base import AdapterError

_fetch_lock = threading.Lock()


def local_adapter(adapter: str, cache_dir: str) -> str:
    """A local folder for `adapter`; `s3://…`, `gs://…`, `file://…` and the like are copied into
    `cache_dir` on first use (atomically, so concurrent requests never see half a folder)."""
    if "://" not in adapter:
        return adapter
    target = Path(cache_dir) / hashlib.sha256(adapter.encode()).hexdigest()[:24]
    if (target / "adapter_config.json").exists():
        return str(target)
    import fsspec

    with _fetch_lock:
        if (target / "adapter_config.json").exists():
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        fs, path = fsspec.core.url_to_fs(adapter)
        if not fs.exists(path):
            raise AdapterError(f"adapter {adapter}: not found")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
            staging = Path(tmp) / "adapter"
            fs.get(path.rstrip("/") + "/", str(staging), recursive=True)
            try:
                os.rename(staging, target)
            except OSError:  # another process on this host fetched it first and may be reading it now: keep it
                if (target / "adapter_config.json").exists():
                    return str(target)
                shutil.rmtree(target)  # a folder without a config (not one of ours, all renamed complete)
                os.rename(staging, target)
    return str(target)


def check_adapter(path: str, model: str, max_rank: int) -> None:
    """Refuse, before the engine sees it, an adapter that is missing, too large or for another model."""
    config_file = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(config_file):
        raise AdapterError(f"adapter {path}: no adapter_config.json (not a PEFT LoRA adapter folder)")
    with open(config_file) as f:
        config = json.load(f)
    rank = int(config.get("r", 0))
    if rank > max_rank:
        raise AdapterError(f"adapter {path}: rank {rank} exceeds this engine's max_lora_rank {max_rank} "
                           "(set ARCSYNTH_MAX_LORA_RANK)")
    base = config.get("base_model_name_or_path") or ""
    if base and os.path.normpath(base) != os.path.normpath(model):
        raise AdapterError(f"adapter {path}: trained for base model {base!r}, this engine serves {model!r}")
