"""Can what a run needs be had here? Quick checks made before anything starts.

Each `*_problem` function returns None when the thing can be had, else one line naming it and
what to do. None of them loads weights or starts a process; the only network access is one
request for a hub model's `config.json` (5 s at most) when it is not in the local cache and
`HF_HUB_OFFLINE` is not set. `arcsynth local` refuses to start on the first problem
(`local_problems`); `arcsynth doctor` shows them among its checks.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from arcsynth.common.folders import folder_problem
from arcsynth.common.json_file import JsonFileError, read_json_object
from arcsynth.common.model_store import ALIASES, ModelNotPrepared, resolve_model
from arcsynth.common.settings import Settings

HUB_TIMEOUT_S = 5.0
WHAT_TO_DO = "use `--model smollm2` (after `arcsynth models prepare smollm2`) or a local model folder"
FETCH = ", or download it where the hub is reachable and set HF_HUB_OFFLINE=1 to use the cache"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (`org/name`)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") != 1 or os.sep != "/" and os.sep in name


def model_problem(model: str) -> str | None:
    """Is `model` (an alias, a local folder or a hub id) loadable here without waiting on the network?"""
    if model in ALIASES:
        try:
            resolve_model(model)
        except ModelNotPrepared as exc:
            return str(exc)
        return None
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            return f"model {model}: a path without config.json (not a model folder)"
        try:
            read_json_object(path / "config.json")
        except JsonFileError as exc:
            return f"model {model}: {exc}"
        return None
    if looks_like_path(model):
        return f"model {model}: no such folder; {WHAT_TO_DO}"
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    except ImportError:  # no hub client here: the worker's host decides
        return None
    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return None
    if hub_offline():
        return (f"model {model!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {WHAT_TO_DO}, "
                "or download it into the cache where the hub is reachable")
    try:
        get_hf_file_metadata(hf_hub_url(model, "config.json"), timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every way the hub can fail is the same answer
        name = type(exc).__name__
        if "NotFound" in name or "Gated" in name or "Unauthorized" in name:
            return f"model {model!r}: the hub has no such model, or not for you ({name}); {WHAT_TO_DO}"
        reason = str(exc).splitlines()[0][:120] if str(exc) else name
        return (f"model {model!r} is not in the local Hugging Face cache and the hub cannot be reached ({reason}); "
                f"{WHAT_TO_DO}{FETCH}")
    return None


def adapter_problem(adapter: str) -> str | None:
    """Is the start adapter (`--adapter`: a folder or an fsspec URL) there, as a PEFT adapter?"""
    if "://" in adapter:
        try:
            import fsspec

            fs, path = fsspec.core.url_to_fs(adapter)
            found = fs.exists(path.rstrip("/") + "/adapter_config.json")
        except Exception as exc:  # noqa: BLE001
            return f"adapter {adapter}: cannot be reached ({type(exc).__name__}: {str(exc)[:120]})"
        return None if found else f"adapter {adapter}: no adapter_config.json there (not a PEFT LoRA adapter)"
    if not Path(adapter).is_dir():
        return f"adapter {adapter}: no such folder (give a LoRA adapter folder or an fsspec URL)"
    if not (Path(adapter) / "adapter_config.json").is_file():
        return f"adapter {adapter}: no adapter_config.json (not a PEFT LoRA adapter folder)"
    return None


def dsl_problem(settings: Settings) -> str | None:
    """Do the DSL modules of ARCSYNTH_EXEC_DSL import in the sandbox, and does it have the layers
    ARCSYNTH_EXEC_REQUIRE demands? Starts the sandbox helper once (about a second), only when
    either is set: otherwise an execute worker has nothing here to refuse."""
    for module in settings.exec_dsl_paths():
        if not Path(module).is_file():  # a folder or a FIFO is no module: say so, not that it is missing
            what = "not a regular file" if Path(module).exists() else "no such file"
            return f"DSL module {module} (ARCSYNTH_EXEC_DSL): {what}"
    if not settings.exec_dsl_paths() and not settings.exec_required_layers():
        return None
    from arcsynth.workers.execute import make_executor
    from arcsynth.workers.sandbox.executor import IsolationUnavailable

    executor = make_executor(settings)
    try:
        executor.start()
    except IsolationUnavailable as exc:
        return f"the execute worker would refuse to start: {exc}"
    finally:
        executor.close()
    return None


def artifact_root_problem(root: str) -> str | None:
    """Can this host write under the artifact root (a folder or an fsspec URL)? Writes and removes one
    file; a local folder that did not exist is made for it and removed again."""
    if "://" not in root:
        return _local_root_problem(Path(root).absolute())
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(root)
        fs.makedirs(path, exist_ok=True)
        probe = f"{path.rstrip('/')}/.arcsynth-probe-{uuid.uuid4().hex}"
        fs.pipe_file(probe, b"ok")
        fs.rm(probe)
    except Exception as exc:  # noqa: BLE001
        return f"artifact root {root} (ARCSYNTH_ARTIFACT_ROOT) is not writable here: {str(exc)[:160] or type(exc).__name__}"
    return None


def _local_root_problem(root: Path) -> str | None:
    problem = folder_problem(root)
    return f"artifact root {root} (ARCSYNTH_ARTIFACT_ROOT) is not writable here: {problem}" if problem else None


def replay_problem(settings: Settings) -> str | None:
    """Does the replay file (ARCSYNTH_REPLAY_FILE) load? Reads it as the inference worker will."""
    if not settings.replay_file:
        return "ARCSYNTH_BACKEND=replay needs ARCSYNTH_REPLAY_FILE (a JSONL file of saved completions)"
    from arcsynth.workers.backends.replay import ReplayBackend, ReplayFileError

    try:
        ReplayBackend(settings.replay_file)
    except ReplayFileError as exc:
        return str(exc)
    return None


def sampling_problem(settings: Settings, model: str) -> str | None:
    """Can the inference worker's backend be had: its model, replay file or endpoint?"""
    if settings.backend == "replay":
        return replay_problem(settings)
    if settings.backend == "openai":
        return None if settings.openai_base_url else "ARCSYNTH_BACKEND=openai needs ARCSYNTH_OPENAI_BASE_URL"
    return model_problem(model)


def local_problems(settings: Settings, model: str, adapter: str = "", learns: bool = False) -> str | None:
    """The first thing `arcsynth local` would find missing only after starting its workers, or None.

    `learns`: the run fine-tunes (epochs > 0), so the base model must be loadable whatever the backend."""
    checks = [lambda: sampling_problem(settings, model),
              lambda: model_problem(model) if learns and settings.backend in ("replay", "openai") else None,
              lambda: adapter_problem(adapter) if adapter else None,
              lambda: dsl_problem(settings),
              lambda: artifact_root_problem(settings.artifact_root)]
    return next((problem for check in checks if (problem := check())), None)


def barc_dsl_warning(settings: Settings, prompt_format: str) -> str | None:
    """A warning (not a refusal: programs may do without it) when a run prompts in BARC's format
    but the sandbox offers no module named `common`: BARC's programs start with `from common import *`
    and would each fail with ModuleNotFoundError."""
    if prompt_format != "barc" or any(Path(p).stem == "common" for p in settings.exec_dsl_paths()):
        return None
    return ("--prompt barc: BARC's programs import its DSL (from common import *), and ARCSYNTH_EXEC_DSL offers no "
            "common.py: set ARCSYNTH_EXEC_DSL=/path/to/BARC/common.py (github.com/xu3kev/BARC) and "
            "ARCSYNTH_EXEC_PACKAGES=scipy, or each such program fails to load")
