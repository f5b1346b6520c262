"""Hindsight relabelling, including every skip rule, on a fixed set of executed candidates."""

from arcsynth.common.models import Candidate, Completion, ExecutionResult, InputResult, Task
from arcsynth.common.prompts import format_completion, task_messages
from arcsynth.common.relabel import relabel

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]}],
            test=[{"input": [[5, 6]]}])


def cand(index, outputs, code="def transform(grid):\n    return grid", errors=None, acc=0.0, fp=None):
    results = [InputResult(output=o) if o is not None else InputResult(error=(errors or "exception"))
               for o in outputs]
    ex = ExecutionResult(train=results[:2], test=results[2:], train_correct=0, train_total=2,
                         train_pixel_accuracy=acc, fingerprint=fp or str(outputs))
    return Candidate(task_id="t", index=index, code=code, completion=Completion(text=""), execution=ex)


def test_relabelled_examples_and_skip_rules():
    candidates = [
        cand(0, [[[1, 2]], [[3, 4]], [[5, 6]]]),                          # no-op: skipped
        cand(1, [[[0, 0]], None, [[0, 0]]]),                              # raised: skipped
        cand(2, [[[9]], [[9]], [[9]]], code="def transform(grid):\n    return [[9]]", acc=0.0),
        cand(3, [[[2, 1]], [[4, 3]], [[6, 5]]], code="def transform(grid):\n    return grid[:, ::-1]", acc=1.0),
        cand(4, [[[9]], [[9]], [[9]]], code="def transform(grid):\n    return [[9]] ", acc=0.0),  # same fingerprint as 2
        Candidate(task_id="t", index=5, code=None, completion=Completion(text="no code")),  # no program
        cand(6, [[[7]], [[7]], None], errors="invalid_output"),           # invalid grid: skipped
    ]
    examples = relabel(TASK, candidates)
    assert [e.completion for e in examples] == [
        format_completion("def transform(grid):\n    return grid[:, ::-1]"),
        format_completion("def transform(grid):\n    return [[9]]"),
    ]
    # The prompt shows the task's inputs with the outputs the program really produced.
    relabelled = Task(id="x", train=[{"input": [[1, 2]], "output": [[9]]}, {"input": [[3, 4]], "output": [[9]]}],
                      test=[{"input": [[5, 6]]}])
    assert examples[1].messages == task_messages(relabelled)
    assert TASK.train[0].output == [[2, 1]]  # the original task is untouched
    assert len(relabel(TASK, candidates, limit=1)) == 1
