"""Flower for the project's app, behind basic auth: it sees the workers, the queues and finished tasks."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from common.celery_app import EXECUTE
from common.models import SampleResult, Task
from producer.cluster import KINDS, worker_name
from producer.redis_server import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster
AUTH = "ops:s3cret-flower"


def get(url: str, auth: str | None = AUTH):
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def flower(cluster, tmp_path_factory):
    from common.lifetime import die_with_parent

    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    env = {**cluster.env, "ARCSYNTH_FLOWER_BASIC_AUTH": AUTH}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "producer", "flower", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workers", timeout=1)
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
        return False

    try:
        wait_until(up, 60, "Flower to listen")
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_flower_requires_auth_and_sees_workers_queues_and_tasks(cluster, flower):
    base, log = flower
    with pytest.raises(urllib.error.HTTPError) as denied:
        get(f"{base}/api/workers", auth="ops:wrong")
    assert denied.value.code == 401

    expected = {worker_name(kind) for kind in KINDS}
    wait_until(lambda: expected <= set(get(f"{base}/api/workers?refresh=1")), 60, "Flower to list the workers")

    task = Task(id="flower-t", train=[{"input": [[1]], "output": [[1]]}], test=[{"input": [[1]]}])
    done = SampleResult(task_id=task.id, completions=[{"text": "def transform(grid):\n    return grid"}])
    result = cluster.app.signature(EXECUTE, args=(done.model_dump(), task.model_dump())).apply_async()
    result.get(timeout=60)
    wait_until(lambda: get(f"{base}/api/tasks").get(result.id, {}).get("state") == "SUCCESS", 60,
               "Flower to record the finished task")
    queues = {q["name"]: q["messages"] for q in get(f"{base}/api/queues/length")["active_queues"]}
    assert {"inference", "execute", "finetune"} <= set(queues)
    assert "s3cret-flower" not in log.read_text()
