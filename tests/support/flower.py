"""Start `arcsynth flower` for a test, and read its API with basic auth."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from arcsynth.producer.redis_server import free_port
from tests.support import wait_until


def get(url: str, auth: str | None) -> object:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@contextmanager
def running_flower(env: dict[str, str], auth: str, log: Path) -> Iterator[str]:
    """Flower on a free port behind `auth`; yields its base URL once it answers (401 without auth)."""
    from arcsynth.common.lifetime import die_with_parent

    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "arcsynth.producer", "flower", "--port", str(port)],
                                env={**env, "ARCSYNTH_FLOWER_BASIC_AUTH": auth}, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

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
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
