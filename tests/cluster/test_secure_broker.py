"""Redis with a password and TLS (rediss://) end to end, and the password nowhere it should not be."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arcsynth.producer.cluster import ClusterError, LocalCluster
from arcsynth.producer.redis_server import RedisServer
from tests.support import FLIP, fenced

PASSWORD = "pw-Zq8-never-printed"


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command to make test certificates")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=arcsynth-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "ext")
    return folder / "server.pem", folder / "server.key", folder / "ca.pem"


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    certs = _certificates(root)
    replay = root / "programs.jsonl"
    replay.write_text("".join(json.dumps({"task_id": t, "text": fenced(FLIP)}) + "\n"
                              for t in ("6150a2bd", "74dd1130", "007bbfb7")))
    server = RedisServer(password=PASSWORD, tls=certs)
    env = {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay)}
    try:
        with LocalCluster(model="replay", kinds=("execute", "inference"), env=env, log_dir=root / "logs",
                          redis=server, ready_timeout=120) as cluster:
            yield cluster, root
    except RuntimeError as exc:  # a redis-server built without TLS
        if isinstance(exc, ClusterError):
            raise
        pytest.skip(f"this redis-server cannot serve TLS: {exc}")


def test_a_run_over_rediss_with_a_password_completes_and_the_password_stays_secret(tls_cluster, tmp_path):
    cluster, root = tls_cluster
    assert cluster.redis.url.startswith(f"rediss://:{PASSWORD}@")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", "arc-agi-1/training", "--tasks",
                        "6150a2bd,74dd1130,007bbfb7", "--samples", "1", "--out", str(out), "--wait"],
                       env=cluster.env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "score: 0.333 over 3 tasks" in r.stdout

    # Nowhere: not in what the CLI printed, the workers' logs, the run's files or the stored results.
    status = subprocess.run([sys.executable, "-m", "arcsynth.producer", "status", str(out)], env=cluster.env,
                            capture_output=True, text=True, timeout=60)
    texts = {"cli": r.stdout + r.stderr + status.stdout + status.stderr}
    texts.update({str(p): p.read_text(errors="replace") for p in (root / "logs").iterdir()})
    texts.update({str(p): p.read_text(errors="replace") for p in out.iterdir()})
    leaked = [name for name, text in texts.items() if PASSWORD in text]
    assert not leaked, leaked
    assert any("rediss://" in t for name, t in texts.items() if name.endswith(".log"))  # the workers did use TLS

    import redis

    client = redis.Redis.from_url(cluster.redis.url)
    assert all(PASSWORD.encode() not in (client.dump(k) or b"") for k in client.scan_iter("*"))


def test_plain_connections_and_wrong_passwords_are_refused_with_a_clear_error(tls_cluster):
    cluster, _ = tls_cluster
    base = cluster.redis.url
    wrong = base.replace(PASSWORD, "not-the-password")
    plain = f"redis://:{PASSWORD}@127.0.0.1:{cluster.redis.port}/0"
    for url in (wrong, plain):
        r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "runs"], env={**cluster.env, "ARCSYNTH_BROKER_URL": url},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "setting ARCSYNTH_BROKER_URL: cannot reach Redis" in r.stderr, r.stderr
        assert PASSWORD not in r.stderr and "not-the-password" not in r.stderr and "Traceback" not in r.stderr


def test_flower_over_rediss_shows_the_run_s_tasks_but_never_the_password(tls_cluster, tmp_path):
    """Flower (behind its own basic auth) lists the jobs with their arguments; no secret among them."""
    from tests.support import wait_until
    from tests.support.flower import get, running_flower

    cluster, _ = tls_cluster
    auth = "ops:flower-pw-Kx2"
    log = tmp_path / "flower.log"
    with running_flower(cluster.env, auth, log) as base:
        out = tmp_path / "run"
        r = subprocess.run([sys.executable, "-m", "arcsynth.producer", "submit", "arc-agi-1/training", "--tasks", "6150a2bd",
                            "--samples", "1", "--out", str(out), "--wait"], env=cluster.env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        seen: dict[str, object] = {}

        def listed() -> bool:
            seen["tasks"] = get(f"{base}/api/tasks", auth)
            states = {t["name"]: t["state"] for t in seen["tasks"].values()}
            return states.get("arcsynth.sample") == "SUCCESS" and states.get("arcsynth.execute") == "SUCCESS"

        wait_until(listed, 60, "Flower to list the run's two jobs")
        tasks_json = json.dumps(seen["tasks"])
        assert "6150a2bd" in tasks_json  # the arguments are there ...
        workers_json = json.dumps(get(f"{base}/api/workers?refresh=1", auth))
        for text in (tasks_json, workers_json, log.read_text(errors="replace")):
            assert PASSWORD not in text and "flower-pw-Kx2" not in text  # ... the secrets are not
