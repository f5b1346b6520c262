"""Hindsight relabelling: every program that ran cleanly is a correct program for *some* task.

From a task's executed candidates, build training examples whose prompt shows the task's inputs
with the outputs the program really produced, and whose completion is that program. The
original task is never altered; a new `Task` carries the relabelled pairs.
"""

from __future__ import annotations

from collections.abc import Iterable

from arcsynth.common.models import Candidate, Pair, Task, TrainingExample
from arcsynth.common.prompts import format_completion, task_messages


def _usable(task: Task, cand: Candidate) -> bool:
    ex = cand.execution
    if cand.code is None or ex is None:
        return False
    results = [*ex.train, *ex.test]
    if any(r.error != "none" or r.output is None for r in results):
        return False  # raised, timed out or produced an invalid grid somewhere
    inputs = [p.input for p in [*task.train, *task.test]]
    return any(r.output != grid for r, grid in zip(results, inputs))  # not a no-op


def relabelled_task(task: Task, cand: Candidate) -> Task:
    """The task this program solves: the same inputs, the program's own outputs."""
    assert cand.execution is not None
    train = [Pair(input=p.input, output=r.output) for p, r in zip(task.train, cand.execution.train)]
    return Task(id=f"{task.id}-relabelled-{cand.execution.fingerprint}", train=train,
                test=[Pair(input=p.input) for p in task.test])


def relabel(task: Task, candidates: Iterable[Candidate], by_accuracy: bool = True,
            limit: int | None = None) -> list[TrainingExample]:
    """Training examples from the usable candidates, one per distinct behaviour (fingerprint)."""
    usable = [c for c in candidates if _usable(task, c)]
    if by_accuracy:
        usable.sort(key=lambda c: (-c.execution.train_pixel_accuracy, c.epoch, c.index))  # type: ignore[union-attr]
    seen: set[str] = set()
    examples = []
    for cand in usable:
        fp = cand.execution.fingerprint  # type: ignore[union-attr]
        if fp in seen:
            continue
        seen.add(fp)
        examples.append(TrainingExample(messages=task_messages(relabelled_task(task, cand)),
                                        completion=format_completion(cand.code or "")))
        if limit is not None and len(examples) >= limit:
            break
    return examples
