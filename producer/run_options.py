"""The options every run command takes (`local`, `submit`), and the `RunConfig` they make.

A bad option is a one-line user error naming it, raised before anything starts or is enqueued: a
combination that makes no sense (`check_combination`), or a value the run's models refuse (their
ValidationError names the option that gave the value, or the setting when no option did).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click
from pydantic import ValidationError

from arcsynth.common.cli_base import UserError, first_error, setting_name
from arcsynth.common.data import TaskLoadError, load_tasks
from arcsynth.common.jobs import inference_queue
from arcsynth.common.models import DEFAULT_SAMPLES, RunConfig, SamplingConfig, Task, TrainConfig
from arcsynth.common.settings import Settings
from arcsynth.producer.compare import notable_settings as changed_settings
from arcsynth.producer.model_files import check_adapter_format
from arcsynth.producer.option_errors import option_error
from arcsynth.producer.run import new_run_id
from arcsynth.producer.summary import flat_settings
from arcsynth.producer.tracking import TrackingUnavailable, ensure_available

_TRAIN = TrainConfig()


class SamplesType(click.ParamType):
    """`--samples`: one count for every model (`256`), or counts by model (`A=256,B=64`; a model not
    named samples the default)."""

    name = "samples"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, dict)):
            return value
        text = str(value).strip()
        try:
            if "=" not in text:
                n = int(text)
                if n < 1:
                    raise ValueError
                return n
            counts = {}
            for part in text.split(","):
                name, _, count = part.rpartition("=")
                if not name.strip() or int(count) < 1:
                    raise ValueError
                if name.strip() in counts:
                    self.fail(f"{value!r} gives model {name.strip()} more than one count", param, ctx)
                counts[name.strip()] = int(count)
            return counts
        except ValueError:
            self.fail(f"{value!r} is neither a count >= 1 nor MODEL=COUNT,... with counts >= 1", param, ctx)


RUN_OPTIONS = [
    click.argument("dataset"),
    click.option("--model", "models", multiple=True,
                 help="Model that samples (hub id, path or `smollm2`; default ARCSYNTH_MODEL). Repeat it to pool "
                      "several models' programs in one vote, each served by its own inference workers "
                      "(`arcsynth worker inference --model M`)."),
    click.option("--tasks", help="Comma-separated task ids to run."),
    click.option("--limit", type=click.IntRange(min=1), help="Run only the first N tasks."),
    click.option("--samples", type=SamplesType(), default=DEFAULT_SAMPLES, show_default=True,
                 help="Candidate programs per task and model, or by model: A=256,B=64."),
    click.option("--temperature", type=float, help="Sampling temperature (default ARCSYNTH_TEMPERATURE)."),
    click.option("--top-p", type=float, help="Nucleus sampling threshold (0 < p <= 1)."),
    click.option("--max-tokens", type=click.IntRange(min=1), help="Max tokens per program (default ARCSYNTH_MAX_TOKENS)."),
    click.option("--seed", type=int, help="Sampling seed."),
    click.option("--adapter", default="", help="Start from this LoRA adapter: a PEFT adapter folder (e.g. "
                 "ARTIFACT_ROOT/adapters/ID; a relative path is taken from here and recorded absolute, so with submit "
                 "give one every worker sees) or an fsspec URL."),
    click.option("--prompt", "prompt_format", type=click.Choice(["arcsynth", "barc", "base"]), default="arcsynth",
                 show_default=True, help="Prompt format: arcsynth's chat prompt, BARC's induction prompt (programs "
                 "use BARC's DSL: ARCSYNTH_EXEC_DSL=path/to/common.py), or a plain completion prompt for base "
                 "models without a chat template."),
    click.option("--out", type=click.Path(path_type=Path), help="Run directory."),
    click.option("--timeout", type=float, help="Give up on unfinished tasks after this many seconds."),
    click.option("--epochs", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Search-and-learn rounds: relabel, fine-tune a per-task LoRA, sample again."),
    click.option("--samples-per-epoch", type=click.IntRange(min=1), help="Samples per epoch (default: --samples)."),
    click.option("--finetune-steps", type=click.IntRange(min=1), default=_TRAIN.steps, show_default=True,
                 help="LoRA training steps per epoch."),
    click.option("--keep-searching", is_flag=True, help="Keep learning after a program fits every train pair."),
    click.option("--finetune-from", type=click.Choice(["previous", "base"]), default="previous", show_default=True,
                 help="Start each epoch's adapter from the previous one or from the base model."),
    click.option("--max-active", type=click.IntRange(min=1),
                 help="Tasks in flight at once (default ARCSYNTH_MAX_ACTIVE_TASKS, 64)."),
    click.option("--augment", is_flag=True,
                 help="Show each epoch's prompt rotated/reflected with permuted colours (outputs are reverted)."),
    click.option("--refine", "refine_rounds", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Refinement rounds per epoch: show the best unsolved program with its per-pair "
                      "feedback and sample corrections of it."),
    click.option("--refine-samples", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Corrections sampled per refinement round."),
    click.option("--refine-strategy", type=click.Choice(["best", "rex"]), default="best", show_default=True,
                 help="Which program a round refines: the epoch's best unsolved one, or one drawn by REx "
                      "(Thompson sampling on train accuracy and times refined)."),
    click.option("--rex-c", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
                 help="REx's exploration constant C in Beta(1 + C·h, 1 + C·(1 - h) + N)."),
    click.option("--learn-scope", type=click.Choice(["task", "run"]), default="task", show_default=True,
                 help="One adapter per task per epoch, or one adapter per epoch trained on every task."),
    click.option("--select", type=click.Choice(["best", "diverse"]), default="best", show_default=True,
                 help="Training programs per task: the best K by train accuracy, or the best K and the worst K."),
    click.option("--select-k", type=click.IntRange(min=1), default=25, show_default=True,
                 help="K for --select (programs per task)."),
    click.option("--learn-from-refinements", is_flag=True,
                 help="Train on corrections that beat their parent too (refinement format); needs --refine."),
    click.option("--vote", type=click.Choice(["train-correct", "weighted"]), default="train-correct", show_default=True,
                 help="Attempt selection: train-perfect programs vote, or every program votes with weight "
                      "1 + 1000 × its train-pair accuracy."),
    click.option("--stop-after", type=click.IntRange(min=1), default=1, show_default=True,
                 help="A task stops once this many distinct train-perfect programs exist (--keep-searching: never)."),
    click.option("--min-p", type=click.FloatRange(0, 1), help="min-p sampling threshold (0 turns it off)."),
    click.option("--track", type=click.Choice(["none", "mlflow"]), default="none", show_default=True,
                 help="Log the finished run (settings, per-epoch counts, score, report.html) to MLflow at "
                      "MLFLOW_TRACKING_URI (default ./mlruns); needs `pip install 'arcsynth[track]'`."),
]


def run_options(f):
    for opt in reversed(RUN_OPTIONS):
        f = opt(f)
    return f


def load_run_tasks(dataset: str, tasks: str | None, limit: int | None) -> list[Task]:
    """The tasks a run command names (`--tasks` given but naming no id, like `--tasks ,`, is refused:
    it would run every task); a `TaskLoadError` becomes a user error."""
    ids = [t.strip() for t in tasks.split(",") if t.strip()] if tasks is not None else None
    if ids == []:
        raise UserError("option --tasks: names no task id (give ID,ID,...)")
    try:
        return load_tasks(dataset, ids, limit)
    except TaskLoadError as exc:
        raise UserError(str(exc)) from None


def sampling_config(s: Settings, samples: int, temperature: float | None, max_tokens: int | None, seed: int | None,
                    top_p: float | None, min_p: float | None = None) -> SamplingConfig:
    """The run's sampling: each option given, else its setting; a bad value names the option, or the
    setting (ARCSYNTH_TEMPERATURE…) when it came from the environment."""
    given = {"n": samples, "temperature": temperature, "top_p": top_p, "min_p": min_p, "max_tokens": max_tokens,
             "seed": seed}
    try:
        return SamplingConfig(n=samples, temperature=s.temperature if temperature is None else temperature,
                              top_p=s.top_p if top_p is None else top_p, min_p=s.min_p if min_p is None else min_p,
                              max_tokens=max_tokens or s.max_tokens, seed=seed)
    except ValidationError as exc:
        loc, msg = first_error(exc)
        field = str(loc[0]) if loc else "n"
        if given.get(field) is None:
            raise UserError(f"setting {setting_name(field)}: {msg}") from None
        option = {"n": "samples"}.get(field, field).replace("_", "-")
        raise UserError(f"option --{option}: {msg}") from None


def check_combination(o: dict) -> None:
    """Options that make no sense together: one line naming the first offending option."""
    src = click.get_current_context().get_parameter_source
    given = {name for name in o if src(name) not in (None, click.core.ParameterSource.DEFAULT)}
    if o["refine_rounds"] and o["augment"]:
        raise UserError("option --refine: cannot be combined with --augment (a refinement shows the task as it is)")
    if o["learn_from_refinements"] and not o["refine_rounds"]:
        raise UserError("option --learn-from-refinements: needs --refine N (there are no refinements to learn from)")
    if o["keep_searching"] and "stop_after" in given:
        raise UserError("option --stop-after: cannot be combined with --keep-searching (which never stops early)")
    learning_only = [n for n in ("learn_scope", "select", "select_k", "learn_from_refinements", "finetune_steps",
                                 "finetune_from", "samples_per_epoch") if n in given]
    if learning_only and not o["epochs"]:
        raise UserError(f"option --{learning_only[0].replace('_', '-')}: only applies with --epochs N (N >= 1)")
    refine_only = [n for n in ("refine_strategy", "rex_c", "refine_samples") if n in given]
    if refine_only and not o["refine_rounds"]:
        raise UserError(f"option --{refine_only[0].replace('_', '-')}: only applies with --refine N (N >= 1)")
    if "rex_c" in given and o["refine_strategy"] != "rex":
        raise UserError("option --rex-c: only applies with --refine-strategy rex")
    if o["prompt_format"] == "base" and o["refine_rounds"]:
        raise UserError("option --refine: the base prompt format has no follow-up turn to refine with")
    check_adapter_format(o["adapter"], o["prompt_format"])
    models = o.get("models") or ()
    if any(not m.strip() for m in models):
        raise UserError("option --model: a model name is empty")
    if len(set(models)) != len(models):
        raise UserError("option --model: a model is named twice")
    queues: dict[str, str] = {}
    for m in models:
        other = queues.setdefault(inference_queue(m), m)
        if other != m:
            raise UserError(f"option --model: {other} and {m} would share the queue {inference_queue(m)}; "
                            "name one of them differently (a path, a symlink)")
    if isinstance(o["samples"], dict):
        stray = sorted(set(o["samples"]) - set(models or ()))
        if stray:
            raise UserError(f"option --samples: {stray[0]} is not a model of this run (give it with --model)")


def run_models(s: Settings, o: dict) -> list[str]:
    """The run's models in the order given (`--model`, repeatable), or the configured one."""
    return list(o.get("models") or ()) or [s.model]


def _adapter_path(adapter: str) -> str:
    """A local start adapter by its absolute path: run.json and every record name it, and they are read
    from other working directories (`report`, `resume`); a URL as given."""
    return adapter if not adapter or "://" in adapter else os.path.abspath(adapter)


def run_config(s: Settings, task_list: Sequence[Task], **o) -> RunConfig:
    """The run the options describe; a combination that makes no sense, or a value out of range
    (NaN and infinity included), is a user error naming the option."""
    check_combination(o)
    if o["seed"] is not None and o["seed"] < 0:  # vLLM seeds numpy, which takes none below 0
        raise UserError("option --seed: Input should be greater than or equal to 0")
    models = run_models(s, o)
    model = models[0]
    by_model = o["samples"] if isinstance(o["samples"], dict) else {}
    samples = o["samples"] if isinstance(o["samples"], int) else DEFAULT_SAMPLES
    if o["track"] == "mlflow":
        try:
            ensure_available()
        except TrackingUnavailable as exc:
            raise UserError(f"option --track: {exc}") from None
    sampling = sampling_config(s, samples, o["temperature"], o["max_tokens"], o["seed"], o["top_p"], o["min_p"])
    learn = dict(epochs=o["epochs"], samples_per_epoch=o["samples_per_epoch"] or samples,
                 refine_rounds=o["refine_rounds"], refine_samples=o["refine_samples"],
                 refine_strategy=o["refine_strategy"], rex_c=o["rex_c"],
                 stop_after=None if o["keep_searching"] else o["stop_after"], scope=o["learn_scope"],
                 select=o["select"], select_k=o["select_k"], learn_from_refinements=o["learn_from_refinements"],
                 base_model=model, augment=o["augment"], from_base=o["finetune_from"] == "base",
                 train={"steps": o["finetune_steps"]})
    try:
        return RunConfig(run_id=new_run_id(), dataset=o["dataset"], task_ids=[t.id for t in task_list], model=model,
                         models=models if len(models) > 1 else [], samples_by_model=by_model, sampling=sampling,
                         adapter=_adapter_path(o["adapter"]), max_model_len=s.max_model_len, learn=learn,
                         prompt_format=o["prompt_format"], vote=o["vote"],
                         max_active=o["max_active"] or s.max_active_tasks, timeout_s=o["timeout"],
                         track=o["track"])
    except ValidationError as exc:
        raise option_error(exc, o) from None


# What `arcsynth runs` always shows, then every other setting that differs from its default.
_SHOWN = {"model": "model", "sampling.n": "samples", "learn.epochs": "epochs", "learn.scope": "scope"}
_HIDDEN = {"learn.base_model", "learn.samples_per_epoch"}


def notable_settings(config: RunConfig) -> str:
    """A run's settings as a lab notebook line: model, samples, epochs and scope, then every other
    setting that differs from its default (`select=diverse vote=weighted …`)."""
    flat = flat_settings(config)
    parts = [f"{label}={flat[key]}" for key, label in _SHOWN.items()]
    parts += [f"{key.removeprefix('learn.').removeprefix('sampling.')}={value}"
              for key, value in changed_settings(config).items() if key not in _SHOWN and key not in _HIDDEN]
    return " ".join(parts)
