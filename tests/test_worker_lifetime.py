"""A worker's death takes its vLLM engine processes with it, even on SIGKILL."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from producer.cluster import start_worker, stop_process, wait_ready, worker_name

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
