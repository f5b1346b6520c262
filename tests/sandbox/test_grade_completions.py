"""The execute worker's grading of one job's completions, on the real sandbox: one candidate per
completion, identical programs run once, and no one completion can spoil the others."""

from __future__ import annotations

import pytest

from arcsynth.common.augment import Augmentation
from arcsynth.common.formats import completion_text
from arcsynth.common.jobs import SampleResult
from arcsynth.common.models import Completion, Task
from arcsynth.workers.execute import grade_completions
from arcsynth.workers.sandbox.executor import Executor

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]}],
            test=[{"input": [[5, 6]]}])


@pytest.fixture(scope="module")
def ex():
    e = Executor(timeout_s=2.0, memory_mb=512)
    yield e
    e.close()


def sampled(*codes: str) -> SampleResult:
    return SampleResult(task_id="t", completions=[Completion(text=completion_text("arcsynth", c)) for c in codes])


def test_programs_that_differ_only_in_whitespace_inside_a_string_get_their_own_verdicts(ex):
    blank = 'def transform(grid):\n    s = """a\n\nb"""\n    return [[len(s)]]'
    tight = 'def transform(grid):\n    s = """a\nb"""\n    return [[len(s)]]'
    got = grade_completions(ex, TASK, sampled(blank, tight, blank))
    assert [c.execution.train[0].output for c in got] == [[[4]], [[3]], [[4]]]


def test_a_completion_that_is_not_utf8_is_one_clean_candidate_and_the_others_are_stored(ex):
    odd = Completion(text="Sure \udcff here:\n```python\ndef transform(grid):\n    return grid[:, ::-1]\n```")
    job = SampleResult(task_id="t", completions=[odd, *sampled("def transform(grid):\n    return grid").completions])
    got = grade_completions(ex, TASK, job)
    assert [c.execution.all_train_correct for c in got] == [True, False]
    for c in got:
        c.model_dump_json()  # what storing the job's candidates does: it raised for the whole job


def test_candidates_sampled_on_an_augmented_view_record_it(ex):
    aug = Augmentation(transform="flip_lr")
    got = grade_completions(ex, TASK, sampled("def transform(grid):\n    return grid"), augmentation=aug)
    assert got[0].augmentation == aug.model_dump()
    assert grade_completions(ex, TASK, sampled("def transform(grid):\n    return grid"))[0].augmentation is None
