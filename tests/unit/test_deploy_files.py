"""deploy/: the compose file, Kubernetes manifests, Dockerfiles and systemd units parse and hang together.

No container engine or cluster runs here, so these check what can be checked without one: every
file parses, every image is built by a Dockerfile here (or is a pinned public image), every
`ARCSYNTH_*` variable is a real setting, every Secret key referenced exists, selectors match,
Flower always has auth, Redis always has a password and append-only persistence, GPU workers ask
for GPUs, and the execute pool scales on its queue.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import yaml

from arcsynth.common.celery_app import QUEUES
from arcsynth.common.jobs import inference_queue
from arcsynth.common.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SETTINGS = {f"ARCSYNTH_{name.upper()}" for name in Settings.model_fields}
PUBLIC_IMAGES = {"redis:7"}
KINDS = ("inference", "finetune", "execute", "producer")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs.extend(_docs(DEPLOY / "k8s" / name))
    return docs


def _containers(doc: dict) -> list[dict]:
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def _extras() -> set[str]:
    return set(tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def test_dockerfiles_build_one_image_per_kind_from_this_repo():
    for kind in KINDS:
        text = (DEPLOY / "docker" / f"{kind}.Dockerfile").read_text()
        assert re.search(r"^FROM \S+:\S+", text, re.M), f"{kind}: base image must be pinned"
        for src in re.findall(r"^COPY (\S+)", text, re.M):
            assert (DEPLOY.parent / src).exists(), f"{kind}.Dockerfile copies missing {src}"
        for extras in re.findall(r'"\.\[([^\]]+)\]"', text) + re.findall(r"worker_requirements.py ([\w -]+) >", text):
            assert set(re.split(r"[, ]+", extras.strip())) <= _extras(), f"{kind}.Dockerfile: unknown extras {extras}"
        assert re.search(r"^USER (?!root)\S+", text, re.M)
        if kind == "producer":
            assert 'ENTRYPOINT ["arcsynth"]' in text
        else:  # worker images carry no producer code
            assert 'ENTRYPOINT ["python", "-m", "arcsynth.workers"]' in text and not re.search(r"^COPY producer", text, re.M)
    assert "vllm" in (DEPLOY / "docker" / "inference.Dockerfile").read_text()
    assert "finetune-gpu" in (DEPLOY / "docker" / "finetune.Dockerfile").read_text()
    assert "slim" in (DEPLOY / "docker" / "execute.Dockerfile").read_text()


def test_compose_file_hangs_together():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "flower", "inference", "finetune", "execute"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--requirepass" in redis_cmd and "--appendonly yes" in redis_cmd
    for name, svc in services.items():
        if "build" in svc:
            assert (DEPLOY / ".." / svc["build"]["dockerfile"]).resolve().exists(), name
            assert svc["image"] == f"arcsynth-{Path(svc['build']['dockerfile']).stem.split('.')[0]}"
        else:
            assert svc["image"] in PUBLIC_IMAGES, name
        env = svc.get("environment", {})
        for var in env:
            assert not var.startswith("ARCSYNTH_") or var in SETTINGS, f"{name}: unknown setting {var}"
        if name != "redis":
            assert "ARCSYNTH_BROKER_URL" in env and "${REDIS_PASSWORD" in env["ARCSYNTH_BROKER_URL"], name
        if svc.get("command", [""])[0] == "worker":
            assert svc["command"][1] in QUEUES
    assert "${FLOWER_BASIC_AUTH:?" in services["flower"]["environment"]["ARCSYNTH_FLOWER_BASIC_AUTH"]
    for gpu in ("inference", "finetune"):
        devices = services[gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    assert "replicas" in services["execute"]["deploy"]
    for volume in {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}:
        assert volume in compose["volumes"]


def test_kubernetes_manifests_hang_together():
    docs = _manifests()
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d) and d["metadata"]["name"]
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    assert set(by_kind["Deployment"]) == {"inference", "inference-barc", "finetune", "execute", "flower"}
    assert set(by_kind["StatefulSet"]) == {"redis"}
    secret = _docs(DEPLOY / "k8s" / "secret.example.yaml")[0]
    secret_keys = set(secret["stringData"])
    images = {f"arcsynth-{k}" for k in KINDS}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
        for c in _containers(d):
            image = c["image"]
            assert image in PUBLIC_IMAGES or image.rsplit("/", 1)[-1].split(":")[0] in images, image
            for env in c.get("env", []):
                assert not env["name"].startswith("ARCSYNTH_") or env["name"] in SETTINGS, env["name"]
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret_keys, ref
    for svc in by_kind["Service"].values():
        targets = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                   and svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert targets, f"Service {svc['metadata']['name']} selects no pods"
    for gpu in ("inference", "inference-barc", "finetune"):
        assert _containers(by_kind["Deployment"][gpu])[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    flower_env = {e["name"] for e in _containers(by_kind["Deployment"]["flower"])[0]["env"]}
    assert "ARCSYNTH_FLOWER_BASIC_AUTH" in flower_env
    redis_cmd = " ".join(_containers(by_kind["StatefulSet"]["redis"])[0]["command"])
    assert "--requirepass" in redis_cmd and "--appendonly yes" in redis_cmd
    # One inference pool per model, each scaled on its own model's queue.
    for name, deployment in by_kind["Deployment"].items():
        if _containers(deployment)[0]["args"][:2] != ["worker", "inference"]:
            continue
        model = next(e["value"] for e in _containers(deployment)[0]["env"] if e["name"] == "ARCSYNTH_MODEL")
        (scaler,) = [o for o in by_kind["ScaledObject"].values() if o["spec"]["scaleTargetRef"]["name"] == name]
        assert scaler["spec"]["triggers"][0]["metadata"]["listName"] == inference_queue(model), name
    scaled = by_kind["ScaledObject"]["execute"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind["Deployment"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "execute"
    assert trigger["authenticationRef"]["name"] in by_kind["TriggerAuthentication"]
    auth = by_kind["TriggerAuthentication"][trigger["authenticationRef"]["name"]]
    assert all(ref["key"] in secret_keys for ref in auth["spec"]["secretTargetRef"])


@pytest.mark.parametrize("unit", sorted((DEPLOY / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_systemd_units_start_a_worker_with_a_private_environment(unit):
    text = unit.read_text()
    sections = set(re.findall(r"^\[(\w+)\]", text, re.M))
    assert sections == {"Unit", "Service", "Install"}
    assert re.search(r"^ExecStart=\S+/arcsynth (worker|flower)", text, re.M)
    assert re.search(r"^EnvironmentFile=", text, re.M)  # secrets stay out of the unit file
    assert "KillSignal=SIGTERM" in text and "Restart=" in text


def test_workers_start_without_the_producers_code(tmp_path):
    """What a worker image holds (common/ and workers/ as the `arcsynth` namespace) is enough to
    import every worker kind and run the operator commands; the producer is not importable there."""
    import shutil
    import subprocess
    import sys

    root = DEPLOY.parent
    for part in ("common", "workers"):
        shutil.copytree(root / part, tmp_path / "arcsynth" / part, ignore=shutil.ignore_patterns("__pycache__"))
    probe = """
import importlib.util, runpy, sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path = [p for p in sys.path if "__editable__" not in p]
assert importlib.util.find_spec("arcsynth.producer") is None, "producer code is visible"
for kind in ("execute", "inference", "finetune", "cli"):
    importlib.import_module("arcsynth.workers." + kind)
sys.argv = ["arcsynth.workers", "worker", "--help"]
runpy.run_module("arcsynth.workers", run_name="__main__")
"""
    r = subprocess.run([sys.executable, "-c", "import importlib\n" + probe], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "{inference|finetune|execute}" in r.stdout
