"""Kaggle `submission.json`: build it, and check one against its tasks before anyone uploads it.

The run directory (`RunDir.write_results`) is its one writer."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import TypeAdapter, ValidationError

from arcsynth.common.models import Attempt, Task
from arcsynth.common.scoring import PLACEHOLDER

_Submission = TypeAdapter(dict[str, list[Attempt]])


class SubmissionError(ValueError):
    pass


def build_submission(tasks: Sequence[Task], attempts: dict[str, list[Attempt]]) -> dict[str, list[dict]]:
    """Every task present with one entry per test input; placeholders fill what is missing."""
    out: dict[str, list[dict]] = {}
    for task in tasks:
        got = attempts.get(task.id) or []
        entries = []
        for i in range(len(task.test)):
            a = got[i] if i < len(got) else Attempt(attempt_1=PLACEHOLDER, attempt_2=PLACEHOLDER)
            entries.append(a.model_dump())
        out[task.id] = entries
    return out


def validate_submission_shape(data: object) -> dict[str, list[Attempt]]:
    """Every entry is two valid grids; raise `SubmissionError` naming the first field that is not."""
    try:
        return _Submission.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SubmissionError(f"submission: field {where}: {err['msg']}") from None


def validate_submission(data: object, tasks: Sequence[Task]) -> None:
    """Raise `SubmissionError` naming the first problem; return None for a valid submission."""
    parsed = validate_submission_shape(data)
    for task in tasks:
        if task.id not in parsed:
            raise SubmissionError(f"submission: task {task.id} is missing")
        if len(parsed[task.id]) != len(task.test):
            raise SubmissionError(
                f"submission: task {task.id}: {len(parsed[task.id])} entries for {len(task.test)} test inputs"
            )
    extra = sorted(set(parsed) - {t.id for t in tasks})
    if extra:
        raise SubmissionError(f"submission: task {extra[0]} is not in the dataset")
