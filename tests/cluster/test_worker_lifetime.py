"""A worker's death takes its vLLM engine processes with it, even on SIGKILL."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from arcsynth.producer.cluster import start_worker, stop_process, wait_ready, worker_name

pytestmark = pytest.mark.cluster


def test_no_engine_process_survives_a_killed_inference_worker(cluster, tmp_path):
    log = tmp_path / "inference-9.log"
    proc = start_worker("inference", cluster.env, log, index=9)
    try:
        wait_ready(cluster.app, {worker_name("inference", 9): proc}, {worker_name("inference", 9): log}, 240)
        family = psutil.Process(proc.pid).children(recursive=True)
        titles = [" ".join(p.cmdline()) for p in family]
        assert any("EngineCore" in t for t in titles), titles
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
    finally:
        stop_process(proc)


def test_inference_worker_that_cannot_load_its_model_fails_fast(cluster, tmp_path):
    log = tmp_path / "bad-model.log"
    env = {**cluster.env, "ARCSYNTH_MODEL": str(tmp_path / "no-such-model")}
    proc = start_worker("inference", env, log, index=8)
    try:
        assert proc.wait(timeout=120) == 3
        assert f"cannot load model {str(tmp_path / 'no-such-model')!r}" in log.read_text()
        assert not cluster.app.control.ping(destination=[worker_name("inference", 8)], timeout=1.0)
    finally:
        stop_process(proc)
