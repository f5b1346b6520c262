"""The options every run command takes (`local`, `submit`), and the `RunConfig` they make.

A bad option is a one-line user error naming it, raised before anything starts or is enqueued.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from pydantic import ValidationError

from arcsynth.common.cli_base import UserError
from arcsynth.common.data import TaskLoadError, load_tasks
from arcsynth.common.models import DEFAULT_SAMPLES, LearnConfig, RunConfig, SamplingConfig, Task, TrainConfig
from arcsynth.common.settings import Settings
from arcsynth.producer.run import new_run_id
from arcsynth.producer.rundir import RunDirError, ensure_empty

_TRAIN = TrainConfig()

RUN_OPTIONS = [
    click.argument("dataset"),
    click.option("--tasks", help="Comma-separated task ids to run."),
    click.option("--limit", type=click.IntRange(min=1), help="Run only the first N tasks."),
    click.option("--samples", type=click.IntRange(min=1), default=DEFAULT_SAMPLES, show_default=True,
                 help="Candidate programs per task."),
    click.option("--temperature", type=float, help="Sampling temperature (default ARCSYNTH_TEMPERATURE)."),
    click.option("--top-p", type=float, help="Nucleus sampling threshold (0 < p <= 1)."),
    click.option("--max-tokens", type=click.IntRange(min=1), help="Max tokens per program (default ARCSYNTH_MAX_TOKENS)."),
    click.option("--seed", type=int, help="Sampling seed."),
    click.option("--adapter", default="", help="LoRA adapter (path under the artifact root)."),
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
]


def run_options(f):
    for opt in reversed(RUN_OPTIONS):
        f = opt(f)
    return f


def load_run_tasks(dataset: str, tasks: str | None, limit: int | None) -> list[Task]:
    try:
        ids = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        return load_tasks(dataset, ids, limit)
    except TaskLoadError as exc:
        raise UserError(str(exc)) from None


def sampling_config(s: Settings, samples: int, temperature: float | None, max_tokens: int | None, seed: int | None,
                    top_p: float | None) -> SamplingConfig:
    try:
        return SamplingConfig(n=samples, temperature=s.temperature if temperature is None else temperature,
                              top_p=s.top_p if top_p is None else top_p, max_tokens=max_tokens or s.max_tokens, seed=seed)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = {"n": "samples"}.get(str(err["loc"][0]), str(err["loc"][0])).replace("_", "-")
        raise UserError(f"option --{option}: {err['msg']}") from None


def run_config(s: Settings, task_list: Sequence[Task], model: str, *, dataset, samples, temperature, top_p,
               max_tokens, seed, adapter, timeout, epochs, samples_per_epoch, finetune_steps, finetune_from,
               keep_searching, augment, max_active, refine_rounds, refine_samples, **_) -> RunConfig:
    """The run the options describe; a combination that makes no sense is a user error."""
    sampling = sampling_config(s, samples, temperature, max_tokens, seed, top_p)
    if refine_rounds and augment:
        raise UserError("option --refine: cannot be combined with --augment (a refinement shows the task as it is)")
    learn = LearnConfig(epochs=epochs, samples_per_epoch=samples_per_epoch or samples,
                        refine_rounds=refine_rounds, refine_samples=refine_samples,
                        stop_when_solved=not keep_searching, base_model=model, augment=augment,
                        from_base=finetune_from == "base", train=TrainConfig(steps=finetune_steps))
    return RunConfig(run_id=new_run_id(), dataset=dataset, task_ids=[t.id for t in task_list], model=model,
                     sampling=sampling, adapter=adapter, max_model_len=s.max_model_len, learn=learn,
                     max_active=max_active or s.max_active_tasks, timeout_s=timeout)


def run_dir_for(s: Settings, config: RunConfig, out: Path | None) -> Path:
    """`--out`, or a fresh folder under the run root; refused when it already holds something."""
    path = out or Path(s.run_root) / config.run_id
    check_out(path)
    return path


def check_out(out: Path | None) -> None:
    if out is None:
        return
    try:
        ensure_empty(out)
    except RunDirError:
        raise UserError(f"option --out: {out} exists and is not empty") from None
