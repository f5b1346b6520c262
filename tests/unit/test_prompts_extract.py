"""Grid encoding, prompts and code extraction."""


import pytest

from arcsynth.common import formats
from arcsynth.common.extract import ExtractionError, extract_code
from arcsynth.common.formats import FORMATS
from arcsynth.common.models import Task
from arcsynth.common.prompts import encode_grid, format_completion, task_messages


def test_grid_encoding_is_one_line_of_digits_per_row():
    assert encode_grid([[0, 1, 2], [9, 8, 7]]) == "012\n987"


def test_messages_show_train_pairs_and_test_inputs():
    t = Task(id="t", train=[{"input": [[1]], "output": [[2]]}], test=[{"input": [[3, 4]]}])
    msgs = task_messages(t)
    assert [m["role"] for m in msgs] == ["system", "user"]
    body = msgs[1]["content"]
    assert "Input:\n1\nOutput:\n2" in body and "Test input 1:\n34" in body and "transform(grid)" in body


def test_last_fenced_block_defining_transform_wins():
    text = ("```python\ndef transform(g):\n    return 1\n```\ntext\n```python\nprint(2)\n```\n"
            "```python\nimport numpy as np\ndef transform(g):\n    return 2\n```\n")
    assert extract_code(text) == "import numpy as np\ndef transform(g):\n    return 2"


def test_unfenced_and_unterminated():
    assert extract_code("Sure!\n\nimport numpy as np\ndef transform(g):\n    return g") == \
        "import numpy as np\ndef transform(g):\n    return g"
    assert extract_code("```python\ndef transform(g):\n    return g") == "def transform(g):\n    return g"


def test_round_trip_with_training_format():
    code = "def transform(grid):\n    return grid.T"
    assert extract_code(format_completion(code)) == code


@pytest.mark.parametrize("text, reason", [
    ("I don't know.", "no code block and no `def transform`"),
    ("```python\nprint(1)\n```", "no Python code block defines `transform`"),
    ("```bash\nls\n```", "no Python code block in the completion"),
])
def test_clear_reasons(text, reason):
    with pytest.raises(ExtractionError, match=reason):
        extract_code(text)


def test_refinement_prompt_shows_per_pair_feedback():
    from arcsynth.common.models import ExecutionResult, InputResult
    from arcsynth.common.prompts import refinement_messages

    t = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]},
                            {"input": [[5, 6]], "output": [[6, 5]]}, {"input": [[7, 8]], "output": [[8, 7]]}],
             test=[{"input": [[9, 9]]}])
    ex = ExecutionResult(train=[InputResult(output=[[2, 1]]), InputResult(output=[[3, 3]]),
                                InputResult(output=[[6], [5]]), InputResult(error="exception", message="ZeroDivisionError")],
                         test=[InputResult(output=[[9, 9]])], train_total=4, train_correct=1)
    msgs = refinement_messages(t, "def transform(grid):\n    return grid", ex)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    fb = msgs[-1]["content"]
    assert "Example 1: correct." in fb
    assert "Example 2: wrong, 50% of cells match" in fb
    assert "Example 3: wrong shape 2x1, expected 1x2" in fb
    assert "Example 4: failed with exception: ZeroDivisionError" in fb


ANSWER = ("Here it is:\n```python\nimport numpy as np\n\ndef transform(grid):\n    return np.fliplr(grid)\n```\n"
          "This mirrors the grid.\n")
PROGRAM = "import numpy as np\n\ndef transform(grid):\n    return np.fliplr(grid)"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_crlf_and_lone_cr_line_endings_are_read_as_lf(fmt, eol):
    assert formats.extract(fmt, ANSWER.replace("\n", eol)) == PROGRAM
    if fmt != "barc":  # BARC's extraction needs a block
        assert formats.extract(fmt, PROGRAM.replace("\n", eol) + eol + "Done." + eol) == PROGRAM


@pytest.mark.parametrize("text, code", [
    ("def transform(grid):\n    return grid\n\nThis returns the grid unchanged.",
     "def transform(grid):\n    return grid"),
    ("Here is the code:\n\nimport numpy as np\n\ndef transform(grid):\n    return np.flipud(grid)\n",
     "import numpy as np\n\ndef transform(grid):\n    return np.flipud(grid)"),
    ("Here is the code:\nimport numpy as np\ndef transform(grid):\n    return np.flipud(grid)\n",
     "import numpy as np\ndef transform(grid):\n    return np.flipud(grid)"),
    ("import numpy as np\n\ndef helper(g):\n    return g\n\ndef transform(grid):\n    return helper(grid)\n\n"
     "The helper does nothing.\n",
     "import numpy as np\n\ndef helper(g):\n    return g\n\ndef transform(grid):\n    return helper(grid)"),
    # Prose in the middle goes; a decorator stays with its function.
    ("First a table:\n\nCOLOURS = {1: 2}\n\nThen the function, which maps colours:\n\n@functools.cache\n"
     "def transform(grid):\n    return grid\n\nDone.",
     "COLOURS = {1: 2}\n\n@functools.cache\ndef transform(grid):\n    return grid"),
    # Prose that looks like code (a `for ...:` line) is dropped when it does not compile.
    ("def transform(grid):\n    return grid\n\nfor example, on a 3x3 grid:\n  it returns the same grid.\n",
     "def transform(grid):\n    return grid"),
    # A top-level `if`/`else` after the function is code, kept whole.
    ("def transform(grid):\n    return grid\nif DEBUG:\n    print(1)\nelse:\n    pass\nThat is all.",
     "def transform(grid):\n    return grid\nif DEBUG:\n    print(1)\nelse:\n    pass"),
    # A program that does not compile comes back as its region, for the sandbox to report.
    ("Sure:\n\ndef transform(grid):\n    return grid[\n\nThanks.", "def transform(grid):\n    return grid["),
])
def test_unfenced_answer_is_its_code_region(text, code):
    assert extract_code(text) == code


def test_base_completion_drops_prose_after_the_program_and_keeps_backticks_inside_a_line():
    assert formats.extract("base", "def transform(grid):\n    return grid\n\nThis returns the grid.") == \
        "def transform(grid):\n    return grid"
    body = "def transform(grid):\n    s = '```'\n    return grid"
    assert formats.extract("base", body + "\n```\nDone.") == body


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text", [
    "```python title=x.py\ndef transform(grid):\n    return grid\n```\nDone.",
    "1. The code:\n   ```python\n   def transform(grid):\n       return grid\n   ```\n2. Done.",
    "- The code:\n\n    ```py\n    def transform(grid):\n        return grid\n    ```\n",
    "```python\n\ufeffdef transform(grid):\n    return grid\n```",
    "Here: ```python\ndef transform(grid):\n    return grid\n```",
    "Wrap code in ``` marks like this.\n```python\ndef transform(grid):\n    return grid\n```",
])
def test_fence_variants(fmt, text):
    assert formats.extract(fmt, text) == "def transform(grid):\n    return grid"


@pytest.mark.parametrize("fmt", FORMATS)
def test_backticks_inside_a_line_of_code_do_not_close_the_block(fmt):
    code = "def transform(grid):\n    s = '```'\n    return grid"
    assert formats.extract(fmt, f"```python\n{code}\n```\nDone.") == code


def test_byte_order_mark_is_dropped():
    assert extract_code("\ufeffdef transform(grid):\n    return grid") == "def transform(grid):\n    return grid"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text", ["```python\nasync def transform(grid):\n    return grid\n```",
                                  "async def transform(grid):\n    return grid\n"])
def test_async_transform_is_reported_as_such(fmt, text):
    with pytest.raises(ExtractionError, match="`transform` is defined with `async def`"):
        formats.extract(fmt, text)


# Inputs that made an earlier version slow (runs of backticks and spaces took 8 s at 4 MB):
# benchmarks/extract_speed.py measures how their time grows with their size.
HUGE = [
    "```" + " " * 1000 + "x",
    ("```" + " " * 1000 + "x") * 1000,
    "```python\nx=1\n```\n" * 60_000,
    "```\n" * 250_000,
    "`" * 1_000_000,
    "```" + "a" * 1_000_000,
    "def transform(g):\n    return g\n" + "Some prose here.\n" * 60_000,
    "Some prose here.\n" * 60_000 + "def transform(g):\n    return g\n",
    "def transform(g):\n    return g\n" + "\n" * 1_000_000,
    "def transform(g):\n    return g\n" + "a" * 1_000_000,
    # Too long to compile: comes back unchecked (compiling it would take many seconds).
    "def transform(g):\n    return g\n" + "def f():\n    return [i for i in range(9)]\n" * 25_000 + "(",
]


@pytest.mark.parametrize("text", HUGE)
def test_huge_completions_give_a_program_or_a_reason(text):
    for fmt in FORMATS:
        try:
            assert isinstance(formats.extract(fmt, text), str)
        except ExtractionError as exc:
            assert str(exc)
