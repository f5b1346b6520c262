"""Training data from a task's programs: hindsight relabelling, data selection, refinement traces.

Every program that ran cleanly is a correct program for *some* task: the task's inputs with the
outputs the program really produced. `relabel` turns selected programs into such examples (the
original task is never altered; a new `Task` carries the relabelled pairs). `select_programs`
chooses them: one per behaviour (output fingerprint), hard-coded answers excluded, then the best
by train accuracy (`best`) or the best and the worst (`diverse`, SOAR's greedy-diverse).
`refinement_examples` turns corrections that beat their parent into (feedback prompt → program).
A program sampled on an augmented view of the task is relabelled on that view, the one it was
written for.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from arcsynth.common import formats
from arcsynth.common.augment import Augmentation
from arcsynth.common.models import Candidate, Pair, PromptFormat, Task, TrainingExample

Selection = Literal["best", "diverse"]
MIN_HARDCODED_CELLS = 4


def _usable(task: Task, cand: Candidate) -> bool:
    ex = cand.execution
    if cand.code is None or ex is None:
        return False
    results = [*ex.train, *ex.test]
    if any(r.error != "none" or r.output is None for r in results):
        return False  # raised, timed out or produced an invalid grid somewhere
    inputs = [p.input for p in [*task.train, *task.test]]
    return any(r.output != grid for r, grid in zip(results, inputs))  # not a no-op


def _parse(code: str) -> ast.AST | None:
    """The program's syntax tree, or None where it has none (not Python, or nested past what the
    parser takes: RecursionError, MemoryError)."""
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _literal_grids(code: str) -> Iterable[object]:
    """Every list/tuple literal in the program, as a value (nested tuples become lists)."""
    tree = _parse(code)
    if tree is None:
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            try:
                value = ast.literal_eval(node)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                continue
            yield _as_lists(value)


def _as_lists(value: object) -> object:
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _digit_rows(code: str) -> list[str]:
    """The digits of every line (or `;`/`|`-separated part) of every string literal in the program."""
    rows: list[str] = []
    tree = _parse(code)
    if tree is None:
        return rows
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            rows.extend(re.sub(r"\D", "", part) for part in re.split(r"[\n;|]", node.value))
            rows.append("")  # strings do not run into each other
    return rows


def is_hardcoded(code: str, task: Task) -> bool:
    """Whether the program holds a train output grid of at least 4 cells as a literal: nested
    lists/tuples, or its rows of digits, one per line, in a string."""
    outputs = [p.output for p in task.train if p.output and len(p.output) * len(p.output[0]) >= MIN_HARDCODED_CELLS]
    if not outputs:
        return False
    literals = list(_literal_grids(code))
    if any(grid in literals for grid in outputs):
        return True
    rows = _digit_rows(code)
    for grid in outputs:
        want = ["".join(str(c) for c in row) for row in grid]
        if any(rows[i:i + len(want)] == want for i in range(len(rows) - len(want) + 1)):
            return True
    return False


def shown_task(task: Task, cand: Candidate) -> Task:
    """`task` as the candidate's prompt showed it: its augmented view, if it was sampled on one."""
    return Augmentation.model_validate(cand.augmentation).apply_task(task) if cand.augmentation else task


def _hardcoded(task: Task, cand: Candidate) -> bool:
    """Whether the program holds a train output of the task, or of the view its prompt showed."""
    code = cand.code or ""
    return is_hardcoded(code, task) or (bool(cand.augmentation) and is_hardcoded(code, shown_task(task, cand)))


def select_programs(task: Task, candidates: Iterable[Candidate], select: Selection = "best",
                    k: int | None = None) -> list[Candidate]:
    """The programs to learn from, best first: usable ones (ran cleanly everywhere, not a no-op),
    one per output fingerprint (the best-scoring of each), hard-coded ones excluded; then the top
    `k` by train pixel accuracy (`best`), or the top `k` and the bottom `k` (`diverse`)."""
    usable = [c for c in candidates if _usable(task, c) and not _hardcoded(task, c)]
    usable.sort(key=lambda c: (-c.execution.train_pixel_accuracy, c.epoch, c.index))  # type: ignore[union-attr]
    seen: set[str] = set()
    unique = []
    for cand in usable:
        fp = cand.execution.fingerprint  # type: ignore[union-attr]
        if fp not in seen:
            seen.add(fp)
            unique.append(cand)
    if k is None or len(unique) <= (2 * k if select == "diverse" else k):
        return unique
    return unique[:k] + unique[-k:] if select == "diverse" else unique[:k]


def relabelled_task(task: Task, cand: Candidate) -> Task:
    """The task this program solves: the inputs its prompt showed (the augmented view, if any), with
    the program's own outputs on them."""
    assert cand.execution is not None
    aug = Augmentation.model_validate(cand.augmentation) if cand.augmentation else None

    def view(grid: list[list[int]]) -> list[list[int]]:
        return aug.apply(grid) if aug is not None else grid

    train = [Pair(input=view(p.input), output=view(r.output)) for p, r in zip(task.train, cand.execution.train)]
    return Task(id=f"{task.id}-relabelled-{cand.execution.fingerprint}", train=train,
                test=[Pair(input=view(p.input)) for p in task.test])


def example(fmt: PromptFormat, task: Task, code: str) -> TrainingExample:
    """`task` asking for `code`, in the prompt format a run samples with (and so trains in)."""
    completion = formats.completion_text(fmt, code)
    if fmt == "base":
        return TrainingExample(prompt=formats.prompt_text(fmt, task) or "", completion=completion)
    return TrainingExample(messages=formats.messages(fmt, task), completion=completion)


def relabel(task: Task, candidates: Iterable[Candidate], select: Selection = "best",
            k: int | None = None, fmt: PromptFormat = "arcsynth") -> list[TrainingExample]:
    """Training examples from the selected programs (see `select_programs`), in format `fmt`."""
    return [example(fmt, relabelled_task(task, c), c.code or "") for c in select_programs(task, candidates, select, k)]


def refinement_examples(task: Task, candidates: Sequence[Candidate],
                        fmt: PromptFormat = "arcsynth") -> list[TrainingExample]:
    """Corrections that do better on the train pairs than their parent, in the refinement format:
    the prompt that showed the parent and its feedback → the corrected program. One per parent
    and behaviour. (The `base` format has no refinement turn: none.)"""
    if fmt == "base":
        return []
    by_fp: dict[str, Candidate] = {}
    for c in candidates:  # the first of each behaviour: the one a refinement prompt shows
        if c.execution and c.code:
            by_fp.setdefault(c.execution.fingerprint, c)
    out: list[TrainingExample] = []
    seen: set[tuple[str, str]] = set()
    for c in candidates:
        parent = by_fp.get(c.parent) if c.parent else None
        if parent is None or c.execution is None or not c.code:
            continue
        key = (c.parent, c.execution.fingerprint)
        if key in seen or c.execution.train_pixel_accuracy <= parent.execution.train_pixel_accuracy:  # type: ignore[union-attr]
            continue
        if _hardcoded(task, c):
            continue
        seen.add(key)
        shown = formats.refinement_messages(fmt, task, parent.code or "", parent.execution)  # type: ignore[arg-type]
        out.append(TrainingExample(messages=shown, completion=formats.completion_text(fmt, c.code)))
    return out
