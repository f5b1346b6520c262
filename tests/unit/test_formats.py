"""Prompt formats: arcsynth's own, BARC's (byte for byte against BARC's own prompts) and base."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from arcsynth.common import formats, prompts
from arcsynth.common.data import load_tasks
from arcsynth.common.extract import ExtractionError, extract_code
from arcsynth.common.formats import BARC_COLOURS, FORMATS
from arcsynth.common.models import ExecutionResult, InputResult, Task
from arcsynth.workers.sandbox.executor import Executor

FIXTURES = Path(__file__).parent / "fixtures"


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def _decode(block: str) -> list[list[int]]:
    return [[BARC_COLOURS.index(word) for word in line.split(" ")] for line in block.strip("\n").split("\n")]


# A BARC-style program for ARC-AGI-1 evaluation task 17cae0c1, written in BARC's orientation:
# grids are indexed [x, y], so the three 3x3 patterns lie along the first axis.
BARC_17CAE0C1 = '''from typing import *
import numpy as np

# concepts:
# pattern recognition, color mapping, grid division

# description:
# The input holds three 3x3 gray patterns side by side. Each pattern names a color:
# a ring is green, a center dot yellow, a top row pink, a bottom row blue, a diagonal brown.
# Fill each pattern's 3x3 region of the output with its color.

def main(input_grid):
    output_grid = np.zeros_like(input_grid)
    width, height = input_grid.shape
    for i in range(width // 3):
        block = input_grid[3 * i:3 * i + 3, :] != 0
        if block[1, 1] and block.sum() == 1:
            color = 4
        elif not block[1, 1] and block.sum() == 8:
            color = 3
        elif block[:, 0].all() and block.sum() == 3:
            color = 6
        elif block[:, 2].all() and block.sum() == 3:
            color = 1
        elif block[0, 2] and block[1, 1] and block[2, 0] and block.sum() == 3:
            color = 9
        else:
            color = 0
        output_grid[3 * i:3 * i + 3, :] = color
    return output_grid
'''


@pytest.fixture(scope="module")
def executor():
    e = Executor()
    yield e
    e.close()


def test_formats_are_named():
    assert FORMATS == ("arcsynth", "barc", "base")
    with pytest.raises(ValueError, match="unknown prompt format"):
        formats.messages("llama", Task(id="t", train=[{"input": [[1]], "output": [[2]]}], test=[{"input": [[3]]}]))


def test_barc_v1_messages_equal_barcs_ready_made_prompts_for_arc_agi_1_evaluation_tasks():
    records = _records("barc_prompts.jsonl")
    assert len(records) >= 5
    tasks = {t.id: t for t in load_tasks("arc-agi-1/evaluation", task_ids=[r["uid"] for r in records])}
    for record in records:
        got = formats.barc_v1_messages(tasks[record["uid"]])
        assert got == record["messages"], record["uid"]


def test_barc_messages_equal_barcs_induction_prompt_byte_for_byte():
    """The Potpourri-era prompt (BARC's ..._v2.jsonl): the task is rebuilt from the record's grids."""
    for record in _records("barc_prompts_v2.jsonl"):
        content = record["messages"][1]["content"]
        pairs = re.findall(r"Example \d+\nInput:\n(.*?)\n\nOutput:\n(.*?)\n\n\n", content, re.DOTALL)
        test = re.search(r"for the test example:\nInput:\n(.*?)\n\nWrite", content, re.DOTALL).group(1)
        task = Task(id=record["uid"], train=[{"input": _decode(i), "output": _decode(o)} for i, o in pairs],
                    test=[{"input": _decode(test)}])
        assert len(pairs) == 3
        assert formats.messages("barc", task) == record["messages"]


def test_barc_prompt_shares_the_v1_grids_and_shows_every_test_input():
    task = load_tasks("arc-agi-1/evaluation", task_ids=["0692e18c"])[0]
    user = formats.messages("barc", task)[1]["content"]
    assert "Example 3\nInput:\nYellow Yellow Black\nBlack Black Yellow\nBlack Black Yellow\n\nOutput:\n" in user
    assert user.endswith("Input:\nBlack Black Green\nGreen Green Black\nBlack Green Black\n\n"
                         "Write a Python function `transform` that can convert any given input grid to its "
                         "corresponding output grid based on the pattern observed in the reference examples.")
    two = Task(id="t", train=[{"input": [[1]], "output": [[8]]}], test=[{"input": [[5]]}, {"input": [[9, 0]]}])
    assert "Input:\nGray\n\nBrown Black\n\nWrite" in formats.messages("barc", two)[1]["content"]
    assert formats.prompt_text("barc", two) is None and formats.prompt_text("arcsynth", two) is None


def test_barc_completion_is_barcs_training_answer_and_extracts_back():
    code = "from common import *\nimport numpy as np\n\ndef main(input_grid):\n    # teal stays TEAL, grey\n    return input_grid"
    text = formats.completion_text("barc", code)
    assert text.startswith("Let's solve this puzzle using Python code with the common library functions. We'll "
                           "first reason about the problem and then write the code to solve it.")
    assert text.endswith(":\n```python\nfrom common import *\nimport numpy as np\n\ndef transform(input_grid):\n"
                         "    # purple stays PURPLE, gray\n    return input_grid\n```\n")
    assert formats.extract("barc", text).startswith("from common import *\n")
    assert "def transform(input_grid)" in formats.extract("barc", text)


def test_barc_extraction_takes_the_first_block_defining_the_entry():
    text = ("Here:\n```python\nprint(1)\n```\n```python\ndef main(input_grid):\n    return input_grid\n```\n"
            "```python\ndef transform(input_grid):\n    return 2\n```")
    assert formats.extract("barc", text) == "def main(input_grid):\n    return input_grid"
    cut = "```python\nfrom common import *\ndef transform(input_grid):\n    return input_grid[::-1"
    assert formats.extract("barc", cut).endswith("input_grid[::-1")
    with pytest.raises(ExtractionError, match="no code block"):
        formats.extract("barc", "def main(g): return g")
    with pytest.raises(ExtractionError, match="`transform` or `main`"):
        formats.extract("barc", "```python\nx = 1\n```")


def test_base_prompt_opens_the_block_and_extraction_reads_a_completion_inside_it():
    task = load_tasks("arc-agi-1/evaluation", task_ids=["0692e18c"])[0]
    text = formats.prompt_text("base", task)
    assert text.startswith(prompts.SYSTEM_PROMPT + "\n\n" + prompts.task_prompt(task))
    assert text.endswith("\n\n```python\n")
    body = "import numpy as np\n\ndef transform(grid):\n    return grid"
    assert formats.completion_text("base", body) == body + "\n```"
    assert formats.extract("base", body + "\n```\n\nThis flips nothing.\n```python\nx = 1\n```") == body
    assert formats.extract("base", body + "\n") == body  # cut off at EOF, no closing fence
    assert formats.extract("base", "```python\n" + body + "\n```") == body  # the model reopened the block
    with pytest.raises(ExtractionError):
        formats.extract("base", "I cannot solve this.")
    with pytest.raises(ValueError, match="prompt_text"):
        formats.messages("base", task)


def test_arcsynth_format_is_todays_prompts():
    task = load_tasks("arc-agi-1/evaluation", task_ids=["0692e18c"])[0]
    assert formats.messages("arcsynth", task) == prompts.task_messages(task)
    code = "def transform(grid):\n    return grid"
    assert formats.completion_text("arcsynth", code) == prompts.format_completion(code)
    answer = "Sure.\n" + prompts.format_completion(code)
    assert formats.extract("arcsynth", answer) == extract_code(answer) == code
    assert formats.entry_wrapper("arcsynth", code) == code and formats.entry_wrapper("base", code) == code
    ex = ExecutionResult(train=[InputResult(output=[[1]])] * len(task.train), test=[InputResult(output=[[1]])],
                         train_correct=0, train_total=len(task.train), train_pixel_accuracy=0.0)
    assert formats.refinement_messages("arcsynth", task, code, ex) == prompts.refinement_messages(task, code, ex)


def test_barc_refinement_shows_outputs_in_barcs_encoding():
    task = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3]], "output": [[3]]}],
                test=[{"input": [[4]]}])
    ex = ExecutionResult(train=[InputResult(output=[[1, 8]]), InputResult(output=[[3]])], test=[InputResult(output=[[4]])],
                         train_correct=1, train_total=2, train_pixel_accuracy=0.5)
    msgs = formats.refinement_messages("barc", task, "def main(input_grid):\n    return input_grid", ex)
    assert msgs[:2] == formats.messages("barc", task)
    assert msgs[2] == {"role": "assistant",
                       "content": formats.completion_text("barc", "def main(input_grid):\n    return input_grid")}
    assert msgs[3]["content"] == ("I ran your program on the examples:\nExample 1: wrong, 0% of cells match. Your output:\n"
                                  "Blue Purple\nExample 2: correct.\nWrite a corrected `transform` function. "
                                  "Answer with one ```python block.")
    with pytest.raises(ValueError):
        formats.refinement_messages("base", task, "x", ex)


def test_a_barc_program_solves_an_arc_task_in_the_sandbox_as_barc_runs_it(executor):
    task = load_tasks("arc-agi-1/evaluation", task_ids=["17cae0c1"])[0]
    scope: dict = {}
    exec(BARC_17CAE0C1, scope)
    grids = [p.input for p in [*task.train, *task.test]]
    direct = [np.asarray(scope["main"](np.array(g).T)).T.tolist() for g in grids]  # BARC's [x, y] orientation

    result = executor.grade(task, formats.entry_wrapper("barc", BARC_17CAE0C1, transpose=True))
    assert [r.output for r in [*result.train, *result.test]] == direct
    assert result.train_correct == len(task.train)
    assert [r.output for r in result.test] == [p.output for p in task.test]
    # Not transposed, the same program reads the grid the wrong way round and fails.
    assert executor.grade(task, formats.entry_wrapper("barc", BARC_17CAE0C1)).train_correct == 0


def test_the_barc_adapter_requires_a_numpy_array_and_offers_the_dsl(tmp_path):
    task = Task(id="t", train=[{"input": [[1, 2], [3, 4]], "output": [[2, 1], [4, 3]]}], test=[{"input": [[5, 6]]}])
    dsl = tmp_path / "common.py"
    dsl.write_text("import numpy as np\n\ndef flip_rows(grid):\n    return grid[:, ::-1]\n")
    e = Executor(dsl=[str(dsl)])
    try:
        # No import of its own: BARC's preamble brings in numpy and `from common import *`.
        result = e.grade(task, formats.entry_wrapper("barc", "def transform(input_grid):\n    return flip_rows(input_grid)"))
        assert result.train_correct == 1 and result.test[0].output == [[6, 5]]
        listed = e.grade(task, formats.entry_wrapper("barc", "def main(input_grid):\n    return input_grid.tolist()"))
        assert listed.train[0].output is None and "numpy array" in (listed.train[0].message or "")
        neither = e.grade(task, formats.entry_wrapper("barc", "x = 1"))
        assert neither.train[0].output is None and "neither transform nor main" in (neither.train[0].message or "")
    finally:
        e.close()
