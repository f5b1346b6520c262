"""Flower for the project's app, behind basic auth: it sees the workers, the queues and finished tasks."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from arcsynth.common.jobs import ExecuteRequest, SampleResult, inference_queue, send_execute
from arcsynth.common.models import Task
from arcsynth.producer.cluster import KINDS, worker_name
from tests.support import run_in_process, wait_until
from tests.support.flower import get as flower_get
from tests.support.flower import running_flower

pytestmark = pytest.mark.cluster
AUTH = "ops:s3cret-flower"


def get(url: str, auth: str | None = AUTH):
    return flower_get(url, auth)


@pytest.fixture(scope="module")
def flower(cluster, tmp_path_factory):
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    with running_flower(cluster.env, AUTH, log) as base:
        yield base, log


def test_flower_requires_auth_and_sees_workers_queues_and_tasks(cluster, flower):
    base, log = flower
    with pytest.raises(urllib.error.HTTPError) as denied:
        get(f"{base}/api/workers", auth="ops:wrong")
    assert denied.value.code == 401

    expected = {worker_name(kind) for kind in KINDS}
    wait_until(lambda: expected <= set(get(f"{base}/api/workers?refresh=1")), 60, "Flower to list the workers")

    task = Task(id="flower-t", train=[{"input": [[1]], "output": [[1]]}], test=[{"input": [[1]]}])
    done = SampleResult(task_id=task.id, completions=[{"text": "def transform(grid):\n    return grid"}])
    result = send_execute(cluster.app, done, ExecuteRequest(task=task))
    result.get(timeout=60)
    wait_until(lambda: get(f"{base}/api/tasks").get(result.id, {}).get("state") == "SUCCESS", 60,
               "Flower to record the finished task")
    queues = {q["name"]: q["messages"] for q in get(f"{base}/api/queues/length")["active_queues"]}
    assert {inference_queue(cluster.model), "execute", "finetune"} <= set(queues)
    assert "s3cret-flower" not in log.read_text()


def test_a_person_logs_into_flower_and_sees_workers_and_a_finished_runs_tasks(cluster, flower, browser, tmp_path):
    """Headless Chromium: refused without credentials; with them, the dashboard and the tasks page."""
    from arcsynth.common.models import RunConfig, SamplingConfig

    base, _ = flower
    task = Task(id="flower-run", train=[{"input": [[1, 2]], "output": [[2, 1]]}], test=[{"input": [[3, 4]]}])
    sampling = SamplingConfig(n=1, max_tokens=32)
    config = RunConfig(run_id="flower-run", dataset="test", task_ids=[task.id], model="smollm2", sampling=sampling,
                       timeout_s=300)
    run_in_process(cluster.app, [task], config, tmp_path / "run")

    browser.get(f"{base}/")
    assert "Online" not in browser.page_source  # 401: nothing of the dashboard without credentials
    token = base64.b64encode(AUTH.encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    try:
        def shows(url: str, script: str, check) -> Callable[[], bool]:
            """Poll the live page (Flower fills it by script); reload it now and then."""
            loaded = [0.0]

            def condition() -> bool:
                if time.monotonic() - loaded[0] > 5:
                    browser.get(url)
                    loaded[0] = time.monotonic()
                seen[url] = browser.execute_script(script)
                return check(seen[url])
            return condition

        seen: dict[str, object] = {}

        names = {worker_name(k) for k in KINDS}
        # textContent, not innerText: Flower splits a name into two spans that a narrow layout wraps.
        rows_js = "return Array.from(document.querySelectorAll('#workers-table tbody tr')).map(r => r.textContent)"
        wait_until(shows(f"{base}/", rows_js,
                         lambda rows: names <= {n for n in names for r in rows if n in r and "Online" in r}),
                   60, "the dashboard to show three workers online", interval=0.5)
        wait_until(shows(f"{base}/tasks", "return document.body.innerText",
                         lambda text: "arcsynth.sample" in text and "arcsynth.execute" in text and "SUCCESS" in text),
                   60, "the tasks page to list the run's jobs", interval=0.5)
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
