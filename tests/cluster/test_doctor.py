"""`arcsynth doctor`: on this CPU host it can serve execute; it names a missing model; no password shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arcsynth.producer.redis_server import RedisServer

PASSWORD = "doctor-s3cret-pw"


@pytest.fixture(scope="module")
def broker():
    with RedisServer(password=PASSWORD) as server:
        yield server


def doctor(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arcsynth.producer", "doctor", *args], capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", "HOME": env.pop("HOME"), **env})


def rows(stdout: str) -> dict[str, list[str]]:
    """check name -> [needed by, status, detail]."""
    out = {}
    for line in stdout.splitlines()[1:-1]:
        name, rest = line[:16].strip(), line[16:].split(None, 2)
        out[name] = rest
    return out


def test_doctor_for_execute_passes_here(broker, tmp_path):
    r = doctor("execute", env={"HOME": str(tmp_path), "ARCSYNTH_BROKER_URL": broker.url,
                               "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "doctor: this host can serve execute"
    table = rows(r.stdout)
    assert table["broker"][:2] == ["execute", "ok"] and ":***@127.0.0.1" in table["broker"][2]
    assert table["sandbox"][1] == "ok" and "isolation active:" in table["sandbox"][2]
    assert table["artifact root"][1] == "ok"
    assert PASSWORD not in r.stdout + r.stderr


def test_doctor_for_inference_names_a_missing_model_and_exits_1(broker, tmp_path):
    missing = str(tmp_path / "no-such-model")
    r = doctor("inference", "--model", missing, env={"HOME": str(tmp_path), "ARCSYNTH_BROKER_URL": broker.url,
                                                     "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    assert r.returncode == 1, r.stdout + r.stderr
    table = rows(r.stdout)
    assert table["model"][:2] == ["inference", "FAIL"] and f"model {missing}: no such folder" in table["model"][2]
    assert table["vllm"][1] == "ok"  # vLLM for CPU imports here
    assert table["cuda"][1] == "warn"  # no GPU: shown, not failing
    assert r.stdout.splitlines()[-1] == "doctor: this host cannot serve inference: model failed"
    assert PASSWORD not in r.stdout + r.stderr


def test_doctor_names_an_unreachable_broker_and_a_dsl_that_does_not_import_without_the_password(tmp_path):
    dsl = tmp_path / "common.py"
    dsl.write_text("import no_such_dependency\n")
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"  # nothing listens on port 1
    r = doctor("execute", env={"HOME": str(tmp_path), "ARCSYNTH_BROKER_URL": url, "ARCSYNTH_EXEC_DSL": str(dsl),
                               "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    assert r.returncode == 1, r.stdout + r.stderr
    table = rows(r.stdout)
    assert table["broker"][1] == "FAIL" and "redis://:***@127.0.0.1:1/0" in table["broker"][2]
    assert table["sandbox"][1] == "FAIL" and f"DSL module {dsl} failed to import" in table["sandbox"][2]
    assert "no_such_dependency" in table["sandbox"][2]
    assert PASSWORD not in r.stdout + r.stderr


def test_doctor_for_finetune_with_the_offline_model(broker, smollm2, tmp_path):
    r = doctor("finetune", "--model", "smollm2", env={"HOME": str(tmp_path), "ARCSYNTH_BROKER_URL": broker.url,
                                                      "ARCSYNTH_MODEL_CACHE": str(Path(smollm2).parent),
                                                      "ARCSYNTH_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    assert r.returncode == 0, r.stdout + r.stderr
    table = rows(r.stdout)
    assert table["model"][:2] == ["finetune", "ok"] and "config and tokenizer load (llama" in table["model"][2]
    assert table["peft"][1] == "ok" and table["unsloth"][1] in ("ok", "warn")
