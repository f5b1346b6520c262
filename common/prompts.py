"""Plain-text grid encoding and the chat messages that ask a model for `transform(grid)`."""

from __future__ import annotations

from collections.abc import Callable

from arcsynth.common.models import ExecutionResult, Task

SYSTEM_PROMPT = (
    "You are an expert Python programmer solving ARC puzzles. Each puzzle maps input grids of "
    "integers 0-9 to output grids. Find the rule and write it as a Python function."
)


def encode_grid(grid: list[list[int]]) -> str:
    """One line per row, digits without separators: compact and tokeniser-friendly."""
    return "\n".join("".join(str(c) for c in row) for row in grid)


def task_prompt(task: Task) -> str:
    parts = ["Here are example input/output pairs:\n"]
    for i, pair in enumerate(task.train, 1):
        assert pair.output is not None
        parts.append(f"Example {i}\nInput:\n{encode_grid(pair.input)}\nOutput:\n{encode_grid(pair.output)}\n")
    for i, pair in enumerate(task.test, 1):
        parts.append(f"Test input {i}:\n{encode_grid(pair.input)}\n")
    parts.append(
        "Write a Python function `transform(grid)` that maps each input to its output. The grid "
        "is a 2-D numpy array of ints; return a 2-D list or array. Answer with one ```python block."
    )
    return "\n".join(parts)


def task_messages(task: Task) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": task_prompt(task)},
    ]


def format_completion(code: str) -> str:
    """How a program appears as the assistant's answer, in training and in extraction."""
    return f"```python\n{code.strip()}\n```"


def execution_feedback(task: Task, execution: ExecutionResult,
                       encode: Callable[[list[list[int]]], str] = encode_grid) -> str:
    """Per train pair: does the program's output match, and if not, how far off is it (a wrong
    output shown in `encode`'s text)."""
    from arcsynth.common.scoring import pixel_accuracy

    lines = []
    for i, (pair, got) in enumerate(zip(task.train, execution.train), 1):
        assert pair.output is not None
        want = (len(pair.output), len(pair.output[0]))
        if got.output is None:
            lines.append(f"Example {i}: failed with {got.error}: {got.message}")
        elif got.output == pair.output:
            lines.append(f"Example {i}: correct.")
        elif (len(got.output), len(got.output[0])) != want:
            lines.append(f"Example {i}: wrong shape {len(got.output)}x{len(got.output[0])}, expected "
                         f"{want[0]}x{want[1]}. Your output:\n{encode(got.output)}")
        else:
            acc = pixel_accuracy(got.output, pair.output)
            lines.append(f"Example {i}: wrong, {acc:.0%} of cells match. Your output:\n{encode(got.output)}")
    return "\n".join(lines)


def refinement_messages(task: Task, code: str, execution: ExecutionResult) -> list[dict[str, str]]:
    """A follow-up turn: the previous program, what it did on each train pair, and a request to fix it."""
    return [
        *task_messages(task),
        {"role": "assistant", "content": format_completion(code)},
        {"role": "user", "content": "I ran your program on the examples:\n" + execution_feedback(task, execution)
         + "\nWrite a corrected `transform(grid)`. Answer with one ```python block."},
    ]
