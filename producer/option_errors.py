"""Which option (or setting) gave the value a run's `RunConfig` refused, for its one-line user error.

`run_options.run_config` builds the RunConfig from the options; the models check every value
(ranges, NaN and infinity, text that is not UTF-8). A ValidationError's location names a field;
this names the option a user typed, or the setting the option fell back on when it was not given.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from arcsynth.common.cli_base import UserError, first_error, setting_name
from arcsynth.common.task_json import field_path
from arcsynth.common.text import show

# Which option gives each part of a RunConfig (the longest prefix of an error's location names it).
_OPTION_OF: dict[tuple[str, ...], str] = {
    ("dataset",): "argument DATASET", ("task_ids",): "option --tasks", ("model",): "option --model",
    ("models",): "option --model", ("samples_by_model",): "option --samples", ("adapter",): "option --adapter",
    ("prompt_format",): "option --prompt", ("vote",): "option --vote", ("max_active",): "option --max-active",
    ("timeout_s",): "option --timeout", ("track",): "option --track", ("learn", "epochs"): "option --epochs",
    ("learn", "samples_per_epoch"): "option --samples-per-epoch", ("learn", "stop_after"): "option --stop-after",
    ("learn", "scope"): "option --learn-scope", ("learn", "base_model"): "option --model",
    ("learn", "train", "steps"): "option --finetune-steps", ("learn", "select"): "option --select",
    ("learn", "select_k"): "option --select-k", ("learn", "augment"): "option --augment",
    ("learn", "from_base"): "option --finetune-from", ("learn", "refine_rounds"): "option --refine",
    ("learn", "refine_samples"): "option --refine-samples", ("learn", "refine_strategy"): "option --refine-strategy",
    ("learn", "rex_c"): "option --rex-c", ("learn", "learn_from_refinements"): "option --learn-from-refinements",
}
# Parts that come from a setting when their option is not given: (option's key, setting's field).
_SETTING_OF: dict[tuple[str, ...], tuple[str, str]] = {
    ("model",): ("models", "model"), ("learn", "base_model"): ("models", "model"),
    ("max_active",): ("max_active", "max_active_tasks"),
}


def option_error(exc: ValidationError, o: dict[str, Any]) -> UserError:
    """The one line for a RunConfig the options make that does not validate: the option (or the
    setting it fell back on) that gave the value, the key within it (a model in `--samples`), and why."""
    loc, msg = first_error(exc)
    prefix = max((p for p in _OPTION_OF if loc[:len(p)] == p), key=len, default=None)
    if prefix is None:
        return UserError(f"options: {field_path(loc)}: {msg}")
    name = _OPTION_OF[prefix]
    if prefix in _SETTING_OF and not o.get(_SETTING_OF[prefix][0]):
        name = f"setting {setting_name(_SETTING_OF[prefix][1])}"
    keys = [show(k) for k in loc[len(prefix):] if isinstance(k, str) and k != "[key]"]  # a model's name in --samples
    return UserError(f"{name}: {': '.join([*keys, msg])}")
