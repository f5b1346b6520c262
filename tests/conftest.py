"""One local cluster (private Redis + a worker of each kind, one vLLM engine) for the whole session."""

from __future__ import annotations

import pytest

from arcsynth.common.model_store import prepare_smollm2
from tests.support import BARC_FLIP_LR, FLIP, FLIP_AGAIN, SLOW, SLOW_DATASET, TRANSPOSE, fenced, teach_request


@pytest.fixture(scope="session")
def smollm2() -> str:
    return str(prepare_smollm2())


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def cluster(smollm2, artifact_root, tmp_path_factory):
    from arcsynth.producer.cluster import LocalCluster

    env = {"ARCSYNTH_ARTIFACT_ROOT": artifact_root, "ARCSYNTH_MAX_MODEL_LEN": "4096",
           "ARCSYNTH_MAX_LORA_RANK": "8", "ARCSYNTH_EXEC_TIMEOUT_S": "2"}
    with LocalCluster(model="smollm2", env=env, log_dir=tmp_path_factory.mktemp("cluster-logs"),
                      ready_timeout=240) as c:
        yield c


@pytest.fixture(scope="session")
def taught(cluster) -> dict:
    """A LoRA adapter taught the programs of two ARC tasks, trained by the fine-tune worker."""
    from arcsynth.common.jobs import send_finetune

    return send_finetune(cluster.app, None, teach_request()).get(timeout=1200)


@pytest.fixture(scope="session")
def replay_cluster(tmp_path_factory):
    """Redis + an execute worker, an inference worker serving fixed programs (the `replay` backend)
    and a fine-tune worker."""
    import json

    from arcsynth.common.data import load_tasks
    from arcsynth.producer.cluster import LocalCluster

    root = tmp_path_factory.mktemp("replay")
    replay = root / "programs.jsonl"
    with open(replay, "w") as f:
        for t in load_tasks("arc-agi-1/training"):
            for code in (FLIP, TRANSPOSE):
                f.write(json.dumps({"task_id": t.id, "text": fenced(code)}) + "\n")
        for t in load_tasks(SLOW_DATASET, limit=40):
            f.write(json.dumps({"task_id": t.id, "text": fenced(SLOW)}) + "\n")
        # Asked to correct its program for 74dd1130 (a transpose), the model answers with a transpose;
        # for 6150a2bd (a flip), with another way of writing the flip.
        f.write(json.dumps({"task_id": "74dd1130", "text": fenced(TRANSPOSE), "refine": True}) + "\n")
        f.write(json.dumps({"task_id": "6150a2bd", "text": fenced(FLIP_AGAIN), "refine": True}) + "\n")
        # A third answer for 67a3c6ac (a left-right flip) in BARC's style: its entry point is `main`.
        f.write(json.dumps({"task_id": "67a3c6ac", "text": fenced(BARC_FLIP_LR)}) + "\n")
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "10",
           "ARCSYNTH_RUN_ROOT": str(root / "runs"), "ARCSYNTH_ARTIFACT_ROOT": str(root / "artifacts")}
    # The replay worker stands in for SmolLM2 (its queue is smollm2's), on which the fine-tune worker
    # trains real (tiny) adapters for the learning tests.
    with LocalCluster(model="smollm2", kinds=("execute", "inference", "finetune"), env=env, log_dir=root / "logs",
                      ready_timeout=180) as c:
        yield c


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven through chromedriver (installed by `make install`)."""
    import shutil

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("needs Debian's chromium and chromium-driver (`make install` installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--force-device-scale-factor=1", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
