"""One local cluster (private Redis + a worker of each kind, one vLLM engine) for the whole session."""

from __future__ import annotations

import pytest

from common.model_store import prepare_smollm2


@pytest.fixture(scope="session")
def smollm2() -> str:
    return str(prepare_smollm2())


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def cluster(smollm2, artifact_root, tmp_path_factory):
    from producer.cluster import LocalCluster

    env = {"ARCSYNTH_ARTIFACT_ROOT": artifact_root, "ARCSYNTH_MAX_MODEL_LEN": "4096",
           "ARCSYNTH_MAX_LORA_RANK": "8", "ARCSYNTH_EXEC_TIMEOUT_S": "2"}
    with LocalCluster(model="smollm2", env=env, log_dir=tmp_path_factory.mktemp("cluster-logs"),
                      ready_timeout=240) as c:
        yield c
