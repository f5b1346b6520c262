"""The official ARC score and the choice of two attempts per test input.

Selection follows common practice in program-synthesis ARC systems: programs correct on every
train pair vote with their test outputs (identical outputs pool their votes); then the rest
rank by train pixel accuracy; the two attempts differ whenever two distinct outputs exist. Or
SOAR's weighted majority vote, where every program votes in proportion to its train accuracy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel

from arcsynth.common.models import Attempt, Candidate, ExecutionResult, Task

Grid = list[list[int]]
PLACEHOLDER: Grid = [[0]]


def pixel_accuracy(predicted: Grid | None, expected: Grid) -> float:
    """Fraction of matching cells; 0 when the shapes differ."""
    if predicted is None or len(predicted) != len(expected) or len(predicted[0]) != len(expected[0]):
        return 0.0
    total = len(expected) * len(expected[0])
    same = sum(a == b for pr, ex in zip(predicted, expected) for a, b in zip(pr, ex))
    return same / total


def _key(grid: Grid) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(r) for r in grid)


Vote = Literal["train-correct", "weighted"]


def select_attempts(task: Task, candidates: Iterable[Candidate], vote: Vote = "train-correct") -> list[Attempt]:
    """Two attempts for each test input of `task` (placeholders where nothing ran).

    Only programs with an output for every test input take part; identical outputs pool their
    votes. `train-correct`: programs correct on every train pair vote (one each), the rest rank by
    their best train pixel accuracy. `weighted` (SOAR): every program votes with weight
    1 + 1000 × the fraction of train pairs it gets right. Every candidate votes, repeated samples of
    one program too (how often a model writes it is evidence). The two attempts differ whenever two
    distinct outputs exist; the same candidates in any order give the same attempts."""
    ranked: list[tuple[tuple[int, float, int], ExecutionResult]] = []
    for c in candidates:
        ex = c.execution
        if ex is None or len(ex.test) != len(task.test) or any(r.output is None for r in ex.test):
            continue
        ranked.append(((1 if ex.all_train_correct else 0, ex.train_pixel_accuracy, -c.index), ex))
    # Weights in whole units of 1/scale: float sums depend on the order they are added in (ties too).
    scale = math.lcm(1, *(max(1, ex.train_total) for _, ex in ranked))

    def weight(ex: ExecutionResult) -> int:
        if vote == "weighted":
            return scale + 1000 * ex.train_correct * (scale // max(1, ex.train_total))
        return int(ex.all_train_correct)

    attempts: list[Attempt] = []
    for t in range(len(task.test)):
        votes: Counter[tuple] = Counter()
        best: dict[tuple, tuple[int, float, int]] = {}
        for rank, ex in ranked:
            k = _key(ex.test[t].output)  # type: ignore[arg-type]
            votes[k] += weight(ex)
            best[k] = max(best.get(k, rank), rank)
        # The grid itself breaks the last ties: the choice never depends on the order candidates arrived in.
        if vote == "weighted":
            order = sorted(best, key=lambda k: (votes[k], best[k], k), reverse=True)
        else:
            order = sorted(best, key=lambda k: (best[k][0], votes[k], best[k][1], best[k][2], k), reverse=True)
        grids = [[list(r) for r in k] for k in order[:2]]
        while len(grids) < 2:
            grids.append(grids[0] if grids else PLACEHOLDER)
        attempts.append(Attempt(attempt_1=grids[0], attempt_2=grids[1]))
    return attempts


def score_task(task: Task, attempts: Sequence[Attempt]) -> float:
    """Fraction of test outputs matched by either attempt (the official rule)."""
    if not task.has_solutions():
        raise ValueError(f"task {task.id} has no known test outputs")
    solved = sum(
        1 for pair, a in zip(task.test, attempts) if pair.output in (a.attempt_1, a.attempt_2)
    )
    return solved / len(task.test)


class RunScore(BaseModel):
    """A run's official score: the mean over tasks of each task's score (unfinished tasks score 0)."""

    score: float
    tasks: dict[str, float]
    finished: int  # tasks with attempts
    total: int


def score_run(tasks: Iterable[Task], attempts: dict[str, list[Attempt]]) -> RunScore | None:
    """Score every task (streamed); None when some task's test outputs are unknown (or there are none)."""
    per_task: dict[str, float] = {}
    known = True
    for task in tasks:
        known = known and task.has_solutions()
        if known:
            per_task[task.id] = score_task(task, attempts.get(task.id, []))
    if not known or not per_task:
        return None
    return RunScore(score=sum(per_task.values()) / len(per_task), tasks=per_task,
                    finished=sum(t in attempts for t in per_task), total=len(per_task))
