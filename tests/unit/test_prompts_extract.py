"""Grid encoding, prompts and code extraction."""

import pytest

from arcsynth.common.extract import ExtractionError, extract_code
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
