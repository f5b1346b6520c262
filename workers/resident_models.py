"""Base models that stay loaded in a fine-tune worker process between jobs.

A job borrows a resident base model, attaches a LoRA to it, trains, saves, and detaches it. The
base model must come back exactly as it was loaded, or the next job's adapter would depend on
what ran before it. `ModelSnapshot` records, at load time, everything a job can change on the
module tree (submodules, parameters, buffers, hooks, attributes such as `training` or
`gradient_checkpointing`, the shared config) and puts it back after each job; then it checks what
it cannot put back (parameter and buffer storage, in-place writes, dtype, device). A model that
fails that check is evicted, so the next job loads it afresh.

`ResidentModels` is an LRU of such models keyed by `ModelKey` (resolved path, dtype, backend),
size 1 by default, guarded by a lock held for the whole borrow: a worker runs one job at a time.
"""

from __future__ import annotations

import copy
import gc
import logging
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_CONTAINERS = (dict, list, set)  # OrderedDict is a dict
_MISSING = object()


@dataclass(frozen=True)
class ModelKey:
    """Which base model: `path` is the resolved model (a real path for local folders, else a hub id)."""

    path: str
    dtype: str  # "float32", "bfloat16", or "auto" where the backend chooses (unsloth)
    backend: str  # "peft" or "unsloth"
    max_seq_length: int = 0  # unsloth sizes its RoPE and kernels at load time; 0 for peft


def _same_contents(now: Any, saved: Any) -> bool:
    """Whether a container holds the very same items (by identity), in the same order, as its saved copy."""
    if isinstance(now, set):
        return now == saved
    if len(now) != len(saved):
        return False
    if isinstance(now, dict):
        return list(now) == list(saved) and all(a is b for a, b in zip(now.values(), saved.values()))
    return all(a is b for a, b in zip(now, saved))


def _tensor_state(t: Any) -> tuple:
    return (t.data_ptr(), t.dtype, t.device, tuple(t.shape), t._version)


class ModelSnapshot:
    """Everything a training job may change on a module tree, captured once, restorable after each job.

    `restore(model)` puts back each module's `__dict__` (attributes added are removed, replaced
    ones set back, containers such as `_modules`, `_parameters`, hook dicts and
    `warnings_issued` refilled in place), each config's fields (configs are deep-copied),
    each parameter's data tensor (should a trainer swap it), `requires_grad` and a `None` gradient.
    `changes(model)` lists what restoring cannot undo: a parameter or buffer whose storage, dtype,
    device, shape or version counter (which every in-place write bumps, e.g. a LoRA merge) differs.
    Both are linear in the number of modules and parameters, not in their size.
    """

    def __init__(self, model: Any) -> None:
        from transformers import GenerationConfig, PretrainedConfig

        # Per module: its attributes, copies of its non-empty containers, the names of its empty ones
        # (most of torch's hook dicts), which restoring only has to keep empty.
        self._modules: list[tuple[Any, dict[str, Any], dict[str, Any], tuple[str, ...]]] = []
        self._configs: dict[int, tuple[Any, dict[str, Any]]] = {}
        for module in model.modules():
            attrs = dict(module.__dict__)
            contents = {k: copy.copy(v) for k, v in attrs.items() if isinstance(v, _CONTAINERS) and v}
            empty = tuple(k for k, v in attrs.items() if isinstance(v, _CONTAINERS) and not v)
            self._modules.append((module, attrs, contents, empty))
            for v in attrs.values():
                if isinstance(v, (PretrainedConfig, GenerationConfig)) and id(v) not in self._configs:
                    self._configs[id(v)] = (v, copy.deepcopy(v.__dict__))
        # p.detach() shares p's storage and version counter: it costs no memory, and puts back a
        # `p.data = ...` swap (a cast or a move) that a trainer may make.
        self._params = [(p, p.detach(), p.requires_grad, p.grad is None, _tensor_state(p)) for p in model.parameters()]
        self._buffers = [(b, _tensor_state(b)) for b in model.buffers()]

    def restore(self, model: Any) -> None:
        """Put `model`'s module tree back as captured (`model` must be the captured root)."""
        for module, attrs, contents, empty in self._modules:
            current = module.__dict__
            if len(current) != len(attrs) or any(k not in attrs for k in current):
                for k in [k for k in current if k not in attrs]:
                    del current[k]
            for k, v in attrs.items():
                if current.get(k, _MISSING) is not v:
                    current[k] = v
            for k in empty:
                if attrs[k]:
                    attrs[k].clear()
            for k, saved in contents.items():
                v = attrs[k]
                if not _same_contents(v, saved):
                    v.clear()  # refilled in place: torch's hook handles hold these very dicts
                    v.extend(saved) if isinstance(v, list) else v.update(saved)
        for config, fields in self._configs.values():
            config.__dict__.clear()
            config.__dict__.update(copy.deepcopy(fields))
        for p, data, requires_grad, no_grad, state in self._params:
            if _tensor_state(p)[:4] != state[:4]:
                p.data = data
            p.requires_grad_(requires_grad)
            if no_grad:
                p.grad = None

    def changes(self, model: Any) -> list[str]:
        """What differs from the captured model after `restore`: empty when it is exactly as loaded."""
        problems = []
        params = list(model.parameters())
        if [id(p) for p in params] != [id(p) for p, *_ in self._params]:
            problems.append("the set of parameters changed")
        for p, _, requires_grad, no_grad, state in self._params:
            if _tensor_state(p) != state or p.requires_grad != requires_grad or (no_grad and p.grad is not None):
                problems.append(f"parameter {tuple(p.shape)} changed (storage, dtype, device or an in-place write)")
        if [id(b) for b in model.buffers()] != [id(b) for b, _ in self._buffers]:
            problems.append("the set of buffers changed")
        problems += [f"buffer {tuple(b.shape)} changed" for b, state in self._buffers if _tensor_state(b) != state]
        return problems


@dataclass
class Resident:
    """A loaded base model with its tokenizer and the snapshot taken right after loading; dropped together."""

    key: ModelKey
    model: Any
    tokenizer: Any
    snapshot: ModelSnapshot
    extras: dict[str, Any] = field(default_factory=dict)  # what jobs keep with this model (LoRA modules, files)


Loader = Callable[[ModelKey], tuple[Any, Any]]


class ResidentModels:
    """An LRU of resident base models, `size` of them at most (one by default).

    `loads` counts loads per key (a warm hit loads nothing). On a miss the least recently used
    model is dropped before the new one loads, so peak memory is `size` models, not `size + 1`.
    """

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"a resident model cache needs room for at least one model, not {size}")
        self.size = size
        self.loads: Counter[ModelKey] = Counter()
        self._models: OrderedDict[ModelKey, Resident] = OrderedDict()
        self._lock = threading.RLock()

    def keys(self) -> list[ModelKey]:
        """Resident keys, least recently used first."""
        with self._lock:
            return list(self._models)

    def resize(self, size: int) -> None:
        """Keep at most `size` models from now on, dropping the least recently used beyond it."""
        if size < 1:
            raise ValueError(f"a resident model cache needs room for at least one model, not {size}")
        with self._lock:
            self.size = size
            while len(self._models) > size:
                self._drop(next(iter(self._models)))

    def clear(self) -> None:
        """Drop every resident model (loads are still counted)."""
        with self._lock:
            for key in list(self._models):
                self._drop(key)

    @contextmanager
    def borrow(self, key: ModelKey, load: Loader) -> Iterator[Resident]:
        """The resident model for `key` (loaded with `load(key)` if absent), exclusively, for one job.

        On exit, whether the job succeeded or not, the model is restored to its loaded state; if
        anything cannot be restored it is evicted (with a warning), so no later job sees it.
        """
        with self._lock:
            resident = self._models.get(key)
            if resident is None:
                while len(self._models) >= self.size:
                    self._drop(next(iter(self._models)))
                model, tokenizer = load(key)
                self.loads[key] += 1
                resident = Resident(key, model, tokenizer, ModelSnapshot(model))
                self._models[key] = resident
            self._models.move_to_end(key)
            try:
                yield resident
            finally:
                try:
                    resident.snapshot.restore(resident.model)
                    problems = resident.snapshot.changes(resident.model)
                except Exception as e:  # noqa: BLE001 - whatever went wrong, the model is evicted below
                    problems = [f"restoring it failed: {e!r}"]
                if problems:
                    log.warning("resident model %s changed during a job and is evicted: %s", key.path, "; ".join(problems[:5]))
                    self._drop(key)

    def _drop(self, key: ModelKey) -> None:
        del self._models[key]
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


_PROCESS_MODELS = ResidentModels(1)


def process_models(size: int | None = None) -> ResidentModels:
    """This process's resident models (one LRU per worker process); `size`, when given, resizes it."""
    if size is not None and size != _PROCESS_MODELS.size:
        _PROCESS_MODELS.resize(size)
    return _PROCESS_MODELS
