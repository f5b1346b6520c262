"""What a run's local files say about its prompt format: a start adapter's manifest, a model's tokenizer config.

Both are read before anything starts; a file that is not one JSON object is a one-line user error
naming it (`json_file.read_json_object`). Hub ids and adapter URLs are not looked up here.
"""

from __future__ import annotations

from pathlib import Path

from arcsynth.common.cli_base import UserError
from arcsynth.common.json_file import JsonFileError, read_json_object
from arcsynth.common.text import show_path

ADAPTER_MANIFEST = "arcsynth_manifest.json"  # written by the fine-tune worker beside each adapter


def chat_template_problem(model: str, fmt: str) -> str | None:
    """A chat prompt format for a local model whose tokenizer has no chat template (a base model):
    the one line that says to use `--prompt base`; a tokenizer config that is not a JSON object: the
    line naming it. Hub ids are not looked up (nothing is fetched)."""
    from arcsynth.common.model_store import ModelNotPrepared, resolve_model

    if fmt == "base":
        return None
    try:
        path = Path(resolve_model(model))
    except ModelNotPrepared:
        return None  # the model check says so
    config = path / "tokenizer_config.json"
    if not config.is_file() or (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return None
    try:
        has_template = bool(read_json_object(config).get("chat_template"))
    except JsonFileError as exc:
        return f"option --model: model {model}: {exc}"
    if has_template:
        return None
    return f"option --prompt: model {model} has no chat template (a base model): run it with --prompt base"


def check_adapter_format(adapter: str, fmt: str) -> None:
    """A start adapter trained in another prompt format is refused (read from its manifest when local);
    so is a manifest that is not a JSON object with a string `prompt_format`."""
    manifest = Path(adapter) / ADAPTER_MANIFEST if adapter and "://" not in adapter else None
    if manifest is None or not manifest.is_file():
        return
    try:
        trained = read_json_object(manifest).get("prompt_format", "arcsynth")
    except JsonFileError as exc:
        raise UserError(f"option --adapter: {exc}") from None
    if not isinstance(trained, str):
        raise UserError(f"option --adapter: {show_path(manifest)}: field prompt_format: expected a string")
    if trained != fmt:
        raise UserError(f"option --adapter: {adapter} was trained with --prompt {trained}, this run uses --prompt {fmt}")
