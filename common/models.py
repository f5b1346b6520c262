"""Pydantic models for what crosses a boundary: task files, queue messages, run settings (a run's records of
tasks and jobs are in `records`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from arcsynth.common.text import utf8_problem

MAX_SIDE = 30
# One default per setting: the settings, the CLI and the models all read these.
DEFAULT_MAX_TOKENS = 1024
DEFAULT_SAMPLES = 8
# One limit per setting, for every way a value reaches a run (an option, a setting, counts by model or epoch).
MAX_SAMPLES = 4096  # programs sampled in one request
MAX_TEMPERATURE = 4.0
MAX_TOKENS = 32768
MAX_ROUNDS = 1000  # epochs, refinement rounds: far past any run's
MAX_TRAIN_STEPS = 1_000_000  # a fine-tune's optimizer steps
MAX_SEED = 2**63 - 1  # torch.manual_seed and vLLM take any seed in 0..2**63-1
# How a task is shown to a model and how its program comes back (see common/formats.py).
PromptFormat = Literal["arcsynth", "barc", "base"]


def _check_grid(rows: list[list[int]]) -> list[list[int]]:
    if not 1 <= len(rows) <= MAX_SIDE:
        raise ValueError(f"grid must have 1..{MAX_SIDE} rows, got {len(rows)}")
    width = len(rows[0])
    if not 1 <= width <= MAX_SIDE:
        raise ValueError(f"grid must have 1..{MAX_SIDE} columns, got {width}")
    for r, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"grid is ragged: row {r} has {len(row)} cells, row 0 has {width}")
        for c, cell in enumerate(row):
            if not 0 <= cell <= 9:
                raise ValueError(f"colour {cell} at row {r}, column {c} is outside 0..9")
    return rows


# Strict ints: `True`, `1.0` or `"1"` in a task file is an error, not a colour.
Grid = Annotated[list[list[Annotated[int, Field(strict=True)]]], AfterValidator(_check_grid)]


def _check_utf8(text: str) -> str:
    problem = utf8_problem(text)
    if problem:
        raise ValueError(problem)
    return text


# Text that is written to JSON files and Redis: a name from the filesystem or the command line may hold
# bytes that are not UTF-8 (lone surrogates in Python), which neither can take.
Text = Annotated[str, AfterValidator(_check_utf8)]


def _check_model_name(name: str) -> str:
    if not name.isprintable():
        raise ValueError("a model name holds a control character (a hub id or a path has none)")
    return name


# A model's name: a hub id, a path or an alias; it names queues (`inference.<model>`) and shows in
# one-line messages, so it holds no newline or other control character.
ModelName = Annotated[Text, AfterValidator(_check_model_name)]
# A float that must be a number: NaN or infinity is refused (neither compares as a limit means).
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pair(Frozen):
    input: Grid
    output: Grid | None = None


class Task(Frozen):
    """One ARC task. Test outputs are optional: they are unknown for a competition's hidden set."""

    id: Text = Field(min_length=1)
    train: list[Pair] = Field(min_length=1)
    test: list[Pair] = Field(min_length=1)

    @field_validator("train")
    @classmethod
    def _train_has_outputs(cls, train: list[Pair]) -> list[Pair]:
        missing = [i for i, p in enumerate(train) if p.output is None]
        if missing:
            raise ValueError(f"train pair {missing[0]} has no output")
        return train

    @field_validator("test")
    @classmethod
    def _test_outputs_all_or_none(cls, test: list[Pair]) -> list[Pair]:
        """Test outputs are known for every test input or for none (a task with some would be scored by
        nobody: the run would write no score.json, without a word)."""
        given = [i for i, p in enumerate(test) if p.output is not None]
        if given and len(given) < len(test):
            missing = next(i for i, p in enumerate(test) if p.output is None)
            raise ValueError(f"test pair {missing} has no output while test pair {given[0]} has one "
                             "(give every test output or none)")
        return test

    def has_solutions(self) -> bool:
        return all(p.output is not None for p in self.test)


class SamplingConfig(Frozen):
    n: int = Field(DEFAULT_SAMPLES, ge=1, le=MAX_SAMPLES)
    temperature: Finite = Field(1.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: Finite = Field(1.0, gt=0.0, le=1.0)
    min_p: Finite = Field(0.0, ge=0.0, le=1.0)
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS)
    seed: int | None = Field(None, le=MAX_SEED)  # new runs: 0 and up (run_config); older run.json files may hold -1


class Completion(Frozen):
    """One raw sample from the model, before code extraction. Characters that cannot be written as
    UTF-8 (lone surrogates, which a queue message's JSON may carry) become "?": one odd sample must
    not keep a job's results from being stored."""

    text: Annotated[str, AfterValidator(lambda t: t.encode("utf-8", "replace").decode("utf-8"))]
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    finish_reason: str | None = None
    # Wall time of the request that produced it (shared by its n samples). Finite: NaN would be
    # written to candidates.jsonl as null, which no reader takes back.
    seconds: Finite = Field(0.0, ge=0)


ErrorType = Literal[
    "none", "no_code", "syntax_error", "no_transform", "exception", "timeout", "memory",
    "invalid_output", "crashed",
]


class InputResult(Frozen):
    """The outcome of a program on one input grid."""

    output: Grid | None = None
    error: ErrorType = "none"
    message: str = ""


class ExecutionResult(Frozen):
    """One candidate program run on every train and test input of its task."""

    train: list[InputResult]
    test: list[InputResult]
    train_correct: int = 0
    train_total: int = 0
    train_pixel_accuracy: float = 0.0
    fingerprint: str = ""
    seconds: float = 0.0

    @property
    def all_train_correct(self) -> bool:
        return self.train_total > 0 and self.train_correct == self.train_total


class Candidate(Frozen):
    """One candidate program for a task, with where it came from and what it did."""

    task_id: str
    index: int
    code: str | None
    extraction_error: str = ""
    completion: Completion
    epoch: int = 0
    adapter: str = ""
    parent: str = ""  # a refinement of the program with this output fingerprint; empty for a search
    job: str = ""  # the id of the execute job that graded it: a job's candidates are recorded once
    model: str = ""  # the model that sampled it
    # The view of the task its prompt showed (a `common.augment.Augmentation`), where it was augmented:
    # the program is written for that view; its outputs in `execution` are reverted to the task's.
    augmentation: dict | None = None
    execution: ExecutionResult | None = None


class Attempt(Frozen):
    attempt_1: Grid
    attempt_2: Grid


class TrainingExample(Frozen):
    """A (prompt, completion) pair for supervised LoRA fine-tuning; loss only on the completion.
    The prompt is chat `messages` (the tokenizer's chat template applies), or for a model without
    a chat template (`base` format) the raw `prompt` text, messages then empty."""

    messages: list[dict[str, str]] = []
    prompt: str = ""
    completion: str


class LoraConfig(Frozen):
    rank: int = Field(16, ge=1, le=256)
    alpha: int = Field(32, ge=1, le=4096)
    dropout: Finite = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfig(Frozen):
    learning_rate: Finite = Field(2e-3, gt=0)
    steps: int = Field(40, ge=1, le=MAX_TRAIN_STEPS)
    epochs: Finite | None = Field(None, gt=0, le=MAX_ROUNDS)  # when set, passes over the examples instead of steps
    batch_size: int = Field(1, ge=1, le=MAX_SAMPLES)
    max_seq_length: int = Field(4096, ge=16, le=4 * MAX_TOKENS)
    seed: int = 0


class FinetuneRequest(Frozen):
    base_model: str
    examples: list[TrainingExample] = Field(min_length=1)
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    start_adapter: str = ""
    # Where the examples came from: task id -> example count (one task, or a whole run's epoch).
    sources: dict[str, Annotated[int, Field(ge=0)]] = {}
    prompt_format: PromptFormat = "arcsynth"  # recorded in the manifest; a start adapter must match
    backend: Literal["auto", "peft", "unsloth"] = "auto"
    # auto: TRL's SFTTrainer with unsloth, arcsynth's own loop with peft (a quarter faster on CPU).
    trainer: Literal["auto", "loop", "trl"] = "auto"


class FinetuneResult(Frozen):
    adapter: str
    backend: str
    steps: int
    final_loss: float
    seconds: float
    reused: bool = False


class LearnConfig(Frozen):
    """Search and learn: `epochs=0` is plain search.

    Two schools on one setup: the seed author's (`scope="task"`: one adapter per task per epoch,
    the best programs relabelled) and SOAR's (`scope="run"`: one adapter per epoch trained on every
    task's selected programs, refinement as search with `refine_strategy="rex"`, greedy-diverse
    selection, refinement traces as training data)."""

    epochs: int = Field(0, ge=0, le=MAX_ROUNDS)
    samples_per_epoch: int = Field(DEFAULT_SAMPLES, ge=1, le=MAX_SAMPLES)
    # A task stops once this many distinct (by source) train-perfect programs exist; None: never.
    stop_after: int | None = Field(1, ge=1)
    scope: Literal["task", "run"] = "task"
    base_model: Text = ""
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    # Training data per task: `best` takes the top `select_k` programs by train accuracy, `diverse`
    # the `select_k` best and the `select_k` worst; one per behaviour, hard-coded answers excluded.
    select: Literal["best", "diverse"] = "best"
    select_k: int = Field(25, ge=1, le=MAX_SAMPLES)
    augment: bool = False  # each epoch's prompt shows a random rotation/reflection and colour map
    from_base: bool = False  # train each epoch's adapter from the base model, not the previous adapter
    # Refinement: after each epoch's search, up to `refine_rounds` times, show a program with its
    # per-pair feedback and sample `refine_samples` corrections of it. `best`: the best unrefined
    # program of the epoch; `rex`: drawn by Thompson sampling over all the task's programs
    # (Beta(1 + C·h, 1 + C·(1 − h) + N), h its train pixel accuracy, N the times it was refined).
    refine_rounds: int = Field(0, ge=0, le=MAX_ROUNDS)
    refine_samples: int = Field(4, ge=1, le=MAX_SAMPLES)
    refine_strategy: Literal["best", "rex"] = "best"
    rex_c: Finite = Field(20.0, gt=0)
    learn_from_refinements: bool = False  # a correction better than its parent is a training example


class RunConfig(Frozen):
    """Everything that determines a run; written to the run directory as run.json."""

    run_id: str
    dataset: Text
    task_ids: list[Text]
    model: ModelName  # the first of `models`
    sampling: SamplingConfig
    # Every model that samples, each through its own inference queue (`jobs.inference_queue`), all
    # their programs pooled in one vote; empty: `model` alone. `samples_by_model` overrides
    # `sampling.n` (epoch 0) for the models it names.
    models: list[ModelName] = []
    samples_by_model: dict[ModelName, Annotated[int, Field(ge=1, le=MAX_SAMPLES)]] = {}
    adapter: Text = ""
    prompt_format: PromptFormat = "arcsynth"
    max_model_len: int = 8192
    learn: LearnConfig = LearnConfig()
    # How the two attempts are chosen: `train-correct` (train-perfect programs vote, then train
    # accuracy) or `weighted` (every program votes with weight 1 + 1000 × its train-pair accuracy).
    vote: Literal["train-correct", "weighted"] = "train-correct"
    # Tasks in flight at once: bounds the producer's memory and the queues' length, not the speed
    # (workers only need enough queued work to stay busy).
    max_active: int = Field(64, ge=1, le=100_000)
    timeout_s: Finite | None = Field(None, gt=0)
    track: Literal["none", "mlflow"] = "none"  # where the finished run is logged (MLFLOW_TRACKING_URI)

    @property
    def all_models(self) -> list[str]:
        """The models that sample, in the order given; the first is `model`."""
        return self.models or [self.model]
