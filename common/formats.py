"""Prompt formats: how a task is shown to a model and how its program comes back.

Three formats, chosen by name (`FORMATS`):

- `arcsynth`: arcsynth's own chat prompt (`common/prompts.py`), digits per row, the program
  defines `transform(grid)`; extraction is `common/extract.extract_code`.
- `barc`: the induction prompt BARC's fine-tuned models (e.g. barc0/Llama-3.1-ARC-Potpourri-
  Induction-8B) were trained on, from github.com/xu3kev/BARC `finetune/alignment-handbook/
  gen_dataset_both.py` (`make_input_prompt_induction`, `DEFAULT_SYSTEM_PROMPT_IND`, the answer
  in `format`), the same text as its ready-made `arc_problems_concept_arc_528_extra_newline_v2.jsonl`.
  Grids are colour names (0 Black, 1 Blue, 2 Red, 3 Green, 4 Yellow, 5 Gray, 6 Pink, 7 Orange,
  8 Purple, 9 Brown), cells separated by a space, one row a line, each grid followed by one more
  newline. The answer is a fixed sentence then a ```python block; the program (`from common
  import *`, numpy) defines `transform(input_grid)` (BARC's seeds name it `main`; BARC renamed it
  for training) taking and returning a numpy array. `barc_v1_messages` gives BARC's earlier
  prompt (`gen_dataset.py`, `arc_problems_validation_400_extra_newline.jsonl`).
- `base`: a plain completion prompt for a model without a chat template: arcsynth's text, then
  the opening of the answer's code block, so the model continues with the program.

Orientation (`BARC_TRANSPOSE`): the prompts show grids row by row, as ARC stores them (BARC's
`gen_test_prompt.py` transposes twice). BARC's evaluation of its models' programs
(`eval_code_samples.py`, `TRANSPOSE = False`) runs `transform` on the grid as stored and compares
its output with the output as stored, so `entry_wrapper` does not transpose by default. BARC's
hand-written seeds index grids [x, y]; its seed validation and early evaluation ran them on
`train_pair.x.T` against `train_pair.y.T` ("because we index them x,y and they are stored as
r,c"): pass `transpose=True` for programs written that way.
"""

from __future__ import annotations

import re
from typing import get_args

from arcsynth.common import prompts
from arcsynth.common.extract import (
    PYTHON_TAGS,
    block_program,
    clean,
    code_region,
    extract_code,
    fenced_blocks,
    first_fence,
    missing,
)
from arcsynth.common.models import ExecutionResult, PromptFormat, Task

FORMATS: tuple[PromptFormat, ...] = get_args(PromptFormat)

BARC_COLOURS = ("Black", "Blue", "Red", "Green", "Yellow", "Gray", "Pink", "Orange", "Purple", "Brown")
BARC_SYSTEM_PROMPT = ("You are a world-class puzzle solver with exceptional pattern recognition skills and "
                      "expertise in Python programming. Your task is to analyze puzzles and provide Python solutions.")
BARC_INTRO = ("Given input-output grid pairs as reference examples, carefully observe the patterns to predict the "
              "output grid for new test input. Each pair follows the same transformation rule. Grids are 2D arrays "
              "represented as strings, with cells (colors) separated by spaces and rows by newlines.\n"
              "Here are the input and output grids for the reference examples:\n")
BARC_INSTRUCTION = ("\nWrite a Python function `transform` that can convert any given input grid to its corresponding "
                    "output grid based on the pattern observed in the reference examples.")
BARC_ANSWER_PREFIX = ("Let's solve this puzzle using Python code with the common library functions. We'll first reason "
                      "about the problem and then write the code to solve it. The `transform` function will take the "
                      "input grid and return the output grid. Here is the Python code with the comments describing "
                      "how to solve the problem:\n")
BARC_TRANSPOSE = False

_V1_SYSTEM_PROMPT = ("You are an world-class puzzle solver who are extremely good at spotting patterns and solving "
                     "puzzles. You are also an expert Python programmer who can write code to solve puzzles.")
_V1_INTRO = ("The following is a puzzle from the ARC dataset. Given training examples of input and output grids, "
             "predict the output grid for the test inputs.\nEach grid is represented as a 2D array where each cell is "
             "represented by an color. The grid input and output are written as a string where each cell is separated "
             "by a space and each row is separated by a newline.\n"
             "Here are the input and output grids for the training examples:\n")
_RENAMES = {"grey": "gray", "teal": "purple", "maroon": "brown"}  # BARC's COLOR_REPLACEMENTS on answers


def _check(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r} (formats: {', '.join(FORMATS)})")


def barc_grid(grid: list[list[int]]) -> str:
    """BARC's `grid_to_input`: colour names, space-separated, one row a line, then one more newline."""
    return "\n".join(" ".join(BARC_COLOURS[c] for c in row) for row in grid) + "\n"


def barc_user_prompt(task: Task) -> str:
    """BARC's induction question (`make_input_prompt_induction`); all test inputs follow one `Input:`."""
    parts = [BARC_INTRO]
    for i, pair in enumerate(task.train, 1):
        assert pair.output is not None
        parts.append(f"Example {i}\nInput:\n{barc_grid(pair.input)}\nOutput:\n{barc_grid(pair.output)}\n\n")
    parts.append("Here is the input grid for the test example:\n")
    parts.append("Input:\n" + "\n".join(barc_grid(p.input) for p in task.test))
    return "".join(parts) + BARC_INSTRUCTION


def barc_v1_messages(task: Task) -> list[dict[str, str]]:
    """BARC's earlier prompt, as in its `arc_problems_validation_400_extra_newline.jsonl` (no instruction)."""
    parts = [_V1_INTRO]
    for pair in task.train:
        assert pair.output is not None
        parts.append(f"Input:\n{barc_grid(pair.input)}\nOutput:\n{barc_grid(pair.output)}\n\n")
    parts.append("Here are the input grids for the test example:\n")
    parts.append("Input:\n" + "\n".join(barc_grid(p.input) for p in task.test))
    return [{"role": "system", "content": _V1_SYSTEM_PROMPT}, {"role": "user", "content": "".join(parts)}]


def messages(fmt: PromptFormat, task: Task) -> list[dict[str, str]]:
    """The chat messages (system, user) asking for a program. `base` has none: raises ValueError."""
    _check(fmt)
    if fmt == "arcsynth":
        return prompts.task_messages(task)
    if fmt == "barc":
        return [{"role": "system", "content": BARC_SYSTEM_PROMPT}, {"role": "user", "content": barc_user_prompt(task)}]
    raise ValueError("the base format is a plain completion prompt: use prompt_text")


def prompt_text(fmt: PromptFormat, task: Task) -> str | None:
    """For `base`, the whole prompt, ending inside an opened ```python block; for the chat formats
    None (the caller applies the tokenizer's chat template to `messages`)."""
    _check(fmt)
    if fmt != "base":
        return None
    return f"{prompts.SYSTEM_PROMPT}\n\n{prompts.task_prompt(task)}\n\n```python\n"


def _rename_colours(text: str) -> str:
    """BARC's `convert_color_name`: Grey/Teal/Maroon become Gray/Purple/Brown as whole words, case kept."""
    for old, new in _RENAMES.items():
        for o, n in ((old.upper(), new.upper()), (old.capitalize(), new.capitalize()), (old, new)):
            text = re.sub(rf"(?<![a-zA-Z]){o}(?![a-zA-Z])", n, text)
    return text


def completion_text(fmt: PromptFormat, code: str) -> str:
    """How a program appears as the model's answer, for training. For `base` this is the
    continuation of `prompt_text` (the program, then the closing fence). For `barc` it is BARC's
    training answer: its fixed sentence and the block, `def main(` renamed `def transform(` and
    colour names renamed as BARC did."""
    _check(fmt)
    if fmt == "arcsynth":
        return prompts.format_completion(code)
    if fmt == "base":
        return f"{code.strip()}\n```"
    code = re.sub(r"^def main\(", "def transform(", code.strip("\n"), flags=re.MULTILINE)
    return _rename_colours(f"{BARC_ANSWER_PREFIX}```python\n{code}\n```\n")


_DEF_ENTRY = re.compile(r"^def\s+(?:transform|main)\s*\(", re.MULTILINE)


def extract(fmt: PromptFormat, text: str) -> str:
    """The program in a model's answer; raises `ExtractionError` when there is none.

    All formats read the text with LF line endings and without byte-order marks (`clean`), and
    fences as `extract_code` does. `arcsynth`: `extract_code`. `barc`: the first Python block
    (closed or cut off) defining `transform` or `main` at top level, as BARC's evaluation takes the
    first block. `base`: the completion starts inside the block, so the program is the text up to
    the first fence starting or ending a line (or the end) when it defines `transform`, less any
    prose around it (`code_region`); otherwise any later fenced block, as `extract_code` finds it.
    """
    _check(fmt)
    if fmt == "arcsynth":
        return extract_code(text)
    text = clean(text)
    if fmt == "base":
        fence = first_fence(text)
        code = code_region(text[:fence])
        return code if code is not None else extract_code(text)
    blocks = fenced_blocks(text)
    for lang, body in blocks:
        code = block_program(body, _DEF_ENTRY) if lang.lower() in PYTHON_TAGS else None
        if code is not None:
            return code
    if not blocks:
        raise missing(text, "no code block in the completion", "transform|main")
    raise missing(text, "no Python code block defines `transform` or `main`", "transform|main")


_ADAPTER = '''

# arcsynth: run this BARC program as BARC's evaluation does (numpy int grid in, numpy array out).
import numpy as _barc_np
_barc_entry = globals().get("transform") or globals().get("main")
if not callable(_barc_entry):
    raise NameError("the program defines neither transform nor main")


def transform(grid):
    out = _barc_entry(_barc_np.array(grid, dtype=int){t})
    if not isinstance(out, _barc_np.ndarray):
        raise TypeError(f"a BARC program must return a numpy array, not {{type(out).__name__}}")
    return out{t}
'''
_PREAMBLE = "import numpy as np\ntry:\n    from common import *\nexcept ImportError:\n    pass\n"


def entry_wrapper(fmt: PromptFormat, code: str, *, transpose: bool = BARC_TRANSPOSE) -> str:
    """The source the sandbox runs: it must define `transform(grid)` taking a numpy int grid and
    returning a grid. `arcsynth` and `base` programs already do: returned as they are.

    A `barc` program gets BARC's execution preamble (`import numpy as np`, `from common import *`
    when a DSL module `common` is offered, else skipped) and an adapter that calls its `transform`
    (else its `main`) on a fresh int array of the grid, transposed first when `transpose` (see the
    module's note on orientation), requires a numpy array back as BARC does, and transposes it back.
    The adapter rebinds `transform`, so a program calling its own `transform` reaches the adapter.
    """
    _check(fmt)
    if fmt != "barc":
        return code
    return _PREAMBLE + code + _ADAPTER.format(t=".T" if transpose else "")


def refinement_messages(fmt: PromptFormat, task: Task, code: str, execution: ExecutionResult) -> list[dict[str, str]]:
    """A follow-up turn: the task, the previous program as the model's answer, what it did on each
    train pair, and a request to fix it.

    `barc`: BARC never trained a follow-up turn; this is arcsynth's turn in BARC's terms: the
    answer as `completion_text`, the program's outputs as BARC's colour rows, in the prompt's
    orientation (row by row; `execution` holds the outputs after `entry_wrapper`'s adapter).
    `base` has no chat turns: raises ValueError."""
    _check(fmt)
    if fmt == "arcsynth":
        return prompts.refinement_messages(task, code, execution)
    if fmt == "base":
        raise ValueError("the base format has no chat turns to refine in")
    return [
        *messages(fmt, task),
        {"role": "assistant", "content": completion_text(fmt, code)},
        {"role": "user", "content": "I ran your program on the examples:\n"
         + prompts.execution_feedback(task, execution, lambda g: barc_grid(g).rstrip("\n"))
         + "\nWrite a corrected `transform` function. Answer with one ```python block."},
    ]
