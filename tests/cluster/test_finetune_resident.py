"""A warm fine-tune worker: the base model stays resident between jobs and comes back exactly as loaded.

Real peft/transformers/TRL training of SmolLM2 on CPU in float32, where the same job gives the
same adapter bit for bit; a fresh worker process is a real fresh `python` process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from arcsynth.common.models import FinetuneRequest, LoraConfig, TrainConfig, TrainingExample
from arcsynth.workers.lora_backends import _load_peft, model_key
from arcsynth.workers.lora_training import train_adapter
from arcsynth.workers.resident_models import ResidentModels
from tests.support import untrained_adapter

FLIP = TrainingExample(messages=[{"role": "user", "content": "Flip it."}],
                       completion="```python\ndef transform(grid):\n    return grid[::-1]\n```")
TRANSPOSE = TrainingExample(messages=[{"role": "user", "content": "Transpose it."}],
                            completion="```python\ndef transform(grid):\n    return grid.T\n```")


def job(base_model: str = "smollm2", seed: int = 0, **update: Any) -> FinetuneRequest:
    """A small job on every projection of the model (the default target modules), 2 steps."""
    return FinetuneRequest(base_model=base_model, examples=[FLIP, TRANSPOSE], lora=LoraConfig(rank=4, alpha=8),
                           train=TrainConfig(steps=2, batch_size=1, learning_rate=1e-3, seed=seed)).model_copy(update=update)


def weights(adapter: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(adapter) / "adapter_model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys() and a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


class Fingerprint:
    """Everything observable about a model, its weights compared exactly (a clone is kept)."""

    def __init__(self, model: Any) -> None:
        self.modules = [(name, type(m).__name__, m.training, sorted(m.__dict__),
                         {k: v for k, v in m.__dict__.items() if isinstance(v, (bool, int, float, str, type(None)))},
                         {k: list(v) for k, v in m.__dict__.items() if k.startswith("_") and "hook" in k and isinstance(v, dict)})
                        for name, m in model.named_modules()]
        self.tensors = {name: (t.requires_grad, t.grad is None, t.detach().clone())
                        for name, t in [*model.named_parameters(), *model.named_buffers()]}
        self.config = model.config.to_dict()

    def assert_matches(self, model: Any) -> None:
        import torch

        now = Fingerprint.__new__(Fingerprint)
        Fingerprint.__init__(now, model)
        assert now.modules == self.modules
        assert now.config == self.config
        assert now.tensors.keys() == self.tensors.keys()
        for name, (requires_grad, no_grad, value) in self.tensors.items():
            assert now.tensors[name][:2] == (requires_grad, no_grad), name
            assert torch.equal(now.tensors[name][2], value), f"{name} changed"


def fresh_process_adapter(req: FinetuneRequest, root: Path) -> str:
    """The adapter a brand-new worker process trains for `req` as its first job."""
    code = ("import sys\nfrom arcsynth.common.models import FinetuneRequest\n"
            "from arcsynth.workers.lora_training import train_adapter\n"
            "print(train_adapter(FinetuneRequest.model_validate_json(sys.argv[1]), sys.argv[2]).adapter)")
    done = subprocess.run([sys.executable, "-c", code, req.model_dump_json(), str(root)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_warm_workers_job_gives_the_adapter_a_fresh_workers_first_job_gives(smollm2, tmp_path):
    pytest.importorskip("trl")
    target = job()
    fresh = fresh_process_adapter(target, tmp_path / "fresh")

    models = ResidentModels(1)
    root, cache = str(tmp_path / "warm"), str(tmp_path / "cache")
    before = Fingerprint(_load_peft(model_key(target, "peft"))[0])  # a model as loaded, by another load
    # First TRL's SFTTrainer (gradient checkpointing, an input-grad hook, its own seeding), which loads the model.
    trl = train_adapter(job(seed=3, trainer="trl"), root, cache, models)
    resident = models._models[model_key(target, "peft")].model
    before.assert_matches(resident)
    train_adapter(job(seed=5, start_adapter=trl.adapter), root, cache, models)  # continues from an adapter
    before.assert_matches(resident)
    warm = train_adapter(target, root, cache, models)
    before.assert_matches(resident)
    # A start adapter of another shape (rank 8 on q/v, the kept LoRA modules are rank 4 on all): its own config rules.
    odd = untrained_adapter(smollm2, tmp_path / "rank8", rank=8)
    grown = train_adapter(job(start_adapter=odd), root, cache, models)
    assert json.loads((Path(grown.adapter) / "adapter_config.json").read_text())["r"] == 8
    before.assert_matches(resident)
    trl_again = train_adapter(job(seed=3, trainer="trl"), str(tmp_path / "again"), cache, models)
    before.assert_matches(resident)

    assert not warm.reused and models.loads == {model_key(target, "peft"): 1}  # never reloaded: nothing was evicted
    assert_same_weights(weights(warm.adapter), weights(fresh))
    assert_same_weights(weights(trl_again.adapter), weights(trl.adapter))  # TRL's trainer too, cold and warm
    manifest = json.loads((Path(warm.adapter) / "arcsynth_manifest.json").read_text())
    assert manifest["load_seconds"] == 0.0 and 0 < manifest["train_seconds"] < manifest["seconds"]


def test_one_resident_slot_serves_two_base_models_and_loads_the_second_once(smollm2, tmp_path):
    copy = tmp_path / "smollm2-copy"
    shutil.copytree(smollm2, copy)
    models = ResidentModels(1)
    root, cache = str(tmp_path / "artifacts"), str(tmp_path / "cache")
    first = train_adapter(job(), root, cache, models)
    second = train_adapter(job(base_model=str(copy)), root, cache, models)
    third = train_adapter(job(base_model=str(copy), seed=1), root, cache, models)
    key, copy_key = model_key(job(), "peft"), model_key(job(base_model=str(copy)), "peft")
    assert models.loads == {key: 1, copy_key: 1} and models.keys() == [copy_key]  # the second model loaded once

    # Both adapters are right: each names its own base model, and the same weights under two paths
    # train the same adapter.
    for result, base in ((first, smollm2), (second, str(copy)), (third, str(copy))):
        config = json.loads((Path(result.adapter) / "adapter_config.json").read_text())
        assert Path(config["base_model_name_or_path"]).resolve() == Path(base).resolve()
    assert_same_weights(weights(first.adapter), weights(second.adapter))
    with pytest.raises(AssertionError):
        assert_same_weights(weights(second.adapter), weights(third.adapter))  # another seed, another adapter


def test_a_model_that_a_job_changed_in_place_is_evicted_and_loaded_afresh(smollm2, tmp_path):
    """What restoring cannot undo (an in-place write to a base weight) evicts the model; the rest is put back."""
    import torch

    from arcsynth.workers.lora_backends import _load_peft

    models = ResidentModels(1)
    key = model_key(job(), "peft")
    with models.borrow(key, _load_peft) as resident:
        with torch.no_grad():
            next(resident.model.parameters()).add_(0.0)  # the same values, but written in place
    assert models.keys() == [] and models.loads[key] == 1
    with models.borrow(key, _load_peft) as resident:
        resident.model.train()  # restorable: the model stays
        weight = next(resident.model.parameters())
        weight.data = weight.data.double()  # a cast that swaps the tensor's data: put back
    assert models.keys() == [key] and models.loads[key] == 2 and not resident.model.training
    assert weight.dtype == torch.float32
