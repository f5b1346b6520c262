"""What a fine-tune job trains on, and how a remote adapter reaches a worker, without a model."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from arcsynth.common.models import FinetuneRequest, TrainConfig, TrainingExample
from arcsynth.workers.backends.adapters import local_adapter
from arcsynth.workers.lora_backends import _tokenise


class WordTokenizer:
    """One token per word; enough of a tokenizer for `_tokenise`."""

    eos_token = "</s>"

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return " ".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(w) for w in text.replace("</s>", " </s>").split()]}


def example(prompt_words: int) -> TrainingExample:
    return TrainingExample(messages=[{"role": "user", "content": "w " * prompt_words}], completion="def transform(g): return g")


def request(*examples: TrainingExample) -> FinetuneRequest:
    return FinetuneRequest(base_model="smollm2", examples=list(examples), train=TrainConfig(max_seq_length=16))


def test_an_example_whose_prompt_fills_the_context_is_dropped_and_a_request_of_only_such_is_refused():
    """Such an example has no completion token to learn from: in arcsynth's loop its steps trained on
    nothing and reported a NaN loss (TRL's trainer drops it)."""
    rows = _tokenise(WordTokenizer(), request(example(40), example(3), example(15)))
    assert len(rows) == 2  # the 40-word prompt is gone; the 15-word one keeps one completion token
    assert all(any(label != -100 for label in labels[1:]) for _, labels in rows)
    with pytest.raises(ValueError, match="max_seq_length 16"):
        _tokenise(WordTokenizer(), request(example(40), example(16)))


def test_an_adapter_another_process_fetched_first_is_kept_not_replaced_under_its_reader(tmp_path, monkeypatch):
    """Two inference workers on a host share the adapter cache and fetch a run's adapter at once:
    the one that finishes second must not delete the folder the first is already loading."""
    import fsspec

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "adapter_config.json").write_text('{"r": 4}')
    (remote / "adapter_model.safetensors").write_bytes(b"0" * 64)
    url, cache = f"file://{remote}", tmp_path / "cache"
    target = cache / hashlib.sha256(url.encode()).hexdigest()[:24]
    real = fsspec.core.url_to_fs
    first: dict[str, int] = {}

    class OtherProcessFinishesFirst:
        def __init__(self, fs):
            self.fs = fs

        def exists(self, path):
            return self.fs.exists(path)

        def get(self, src, dst, recursive=False):
            shutil.copytree(remote, target)  # the other worker's fetch, renamed into place while ours runs
            first["inode"] = os.stat(target / "adapter_config.json").st_ino
            return self.fs.get(src, dst, recursive=recursive)

    monkeypatch.setattr(fsspec.core, "url_to_fs", lambda u, **kw: (OtherProcessFinishesFirst(real(u, **kw)[0]), real(u, **kw)[1]))
    path = local_adapter(url, str(cache))
    assert Path(path) == target and os.stat(target / "adapter_config.json").st_ino == first["inode"]
    assert [p.name for p in cache.iterdir()] == [target.name]  # our staging copy is cleaned up
