"""Hindsight relabelling, including every skip rule, on a fixed set of executed candidates."""

from arcsynth.common.augment import Augmentation
from arcsynth.common.models import Candidate, Completion, ExecutionResult, InputResult, Task
from arcsynth.common.prompts import format_completion, refinement_messages, task_messages
from arcsynth.common.relabel import is_hardcoded, refinement_examples, relabel, relabelled_task, select_programs

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
    assert len(relabel(TASK, candidates, k=1)) == 1


def _ranked(n):
    """n usable programs with distinct behaviour and train accuracy n-1, …, 0 (over n)."""
    return [cand(i, [[[i, 0]], [[i, 1]], [[i, 2]]], code=f"def transform(grid):\n    return grid * 0 + {i}",
                 acc=(n - 1 - i) / n) for i in range(n)]


def test_best_selection_takes_the_top_k_by_train_accuracy():
    picked = select_programs(TASK, _ranked(6), "best", k=2)
    assert [c.index for c in picked] == [0, 1]


def test_diverse_selection_takes_the_k_best_and_the_k_worst_once_each():
    picked = select_programs(TASK, _ranked(7), "diverse", k=2)
    assert [c.index for c in picked] == [0, 1, 5, 6]
    # Fewer programs than 2k: all of them, once.
    assert [c.index for c in select_programs(TASK, _ranked(3), "diverse", k=2)] == [0, 1, 2]


def test_duplicates_by_fingerprint_keep_the_best_one():
    a = cand(0, [[[2, 1]], [[9, 9]], [[1]]], code="def transform(grid):\n    return 1", acc=0.5, fp="same")
    b = cand(1, [[[2, 1]], [[9, 9]], [[1]]], code="def transform(grid):\n    return 2", acc=0.75, fp="same")
    assert [c.index for c in select_programs(TASK, [a, b], "diverse", k=5)] == [1]


BIG = Task(id="big", train=[{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}], test=[{"input": [[5, 6], [7, 8]]}])


def test_hard_coded_train_outputs_are_recognised_in_every_literal_form():
    assert is_hardcoded("def transform(grid):\n    return [[4, 3], [2, 1]]", BIG)
    assert is_hardcoded("def transform(grid):\n    return ((4, 3), (2, 1))", BIG)
    assert is_hardcoded("import numpy as np\nANSWER = np.array([[4, 3],\n   [2, 1]])\ndef transform(grid):\n"
                        "    return ANSWER", BIG)
    assert is_hardcoded('def transform(grid):\n    s = """43\n21"""\n    return [[int(c) for c in r] for r in s.split()]',
                        BIG)
    assert is_hardcoded('def transform(grid):\n    s = "4 3;2 1"\n    return s', BIG)
    # Not hard-coded: the rule itself, a different grid, a grid under 4 cells, or code that does not parse.
    assert not is_hardcoded("def transform(grid):\n    return grid[::-1, ::-1]", BIG)
    assert not is_hardcoded("def transform(grid):\n    return [[4, 3], [2, 2]]", BIG)
    assert not is_hardcoded("def transform(grid):\n    return [[2, 1]]", TASK)
    assert not is_hardcoded("def transform(grid:\n    return [[4, 3], [2, 1]]", BIG)


def test_hard_coded_programs_are_not_selected():
    honest = cand(0, [[[2, 1]], [[4, 3]], [[6, 5]]], code="def transform(grid):\n    return grid[:, ::-1]", acc=1.0)
    cheat = cand(1, [[[4, 3], [2, 1]], [[4, 3], [2, 1]], [[4, 3], [2, 1]]], acc=0.1,
                 code="def transform(grid):\n    return [[4, 3], [2, 1]]")
    assert [c.index for c in select_programs(BIG.model_copy(update={"train": BIG.train + TASK.train}),
                                             [honest, cheat])] == [0]


def test_refinements_that_beat_their_parent_become_examples_in_the_refinement_format():
    parent = cand(0, [[[2, 1]], [[3, 4]], [[5, 6]]], code="def transform(grid):\n    return grid", acc=0.5, fp="p")
    better = cand(1, [[[2, 1]], [[4, 3]], [[6, 5]]], code="def transform(grid):\n    return grid[:, ::-1]", acc=1.0, fp="b")
    worse = cand(2, [[[0, 0]], [[0, 0]], [[0, 0]]], code="def transform(grid):\n    return grid * 0", acc=0.0, fp="w")
    better = better.model_copy(update={"parent": "p"})
    worse = worse.model_copy(update={"parent": "p"})
    (example,) = refinement_examples(TASK, [parent, better, worse])
    assert example.messages == refinement_messages(TASK, parent.code, parent.execution)
    assert example.completion == format_completion(better.code)


AUG = Augmentation(transform="rot90", colours=(0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
SQUARE = Task(id="s", train=[{"input": [[1, 0], [0, 0]], "output": [[1, 1], [0, 0]]},
                             {"input": [[0, 2], [0, 0]], "output": [[2, 2], [0, 0]]}], test=[{"input": [[0, 0], [3, 0]]}])


def test_a_program_sampled_on_an_augmented_view_is_relabelled_on_that_view():
    """Its code was written for the augmented grids: the relabelled pairs are the augmented inputs
    with what the program returned for them (not the task's inputs with the reverted outputs,
    which the program does not produce)."""
    returned = [[1, 0], [0, 0]]  # `return [[1, 0], [0, 0]]`, whatever the input
    reverted = AUG.revert(returned)
    ex = ExecutionResult(train=[InputResult(output=reverted)] * 2, test=[InputResult(output=reverted)], train_correct=0,
                         train_total=2, train_pixel_accuracy=0.25, fingerprint="f")
    c = Candidate(task_id="s", index=0, code="def transform(grid):\n    return [[1, 0], [0, 0]]",
                  completion=Completion(text=""), augmentation=AUG.model_dump(), execution=ex)
    task = relabelled_task(SQUARE, c)
    assert [(p.input, p.output) for p in task.train] == [(AUG.apply(p.input), returned) for p in SQUARE.train]
    assert [p.input for p in task.test] == [AUG.apply(SQUARE.test[0].input)]
    assert relabel(SQUARE, [c])[0].messages == task_messages(task)


def test_a_program_holding_an_output_of_its_augmented_prompt_is_hard_coded():
    shown = AUG.apply(SQUARE.train[0].output)
    assert shown not in [p.output for p in SQUARE.train]  # hard-coded in the view it was shown alone
    reverted = SQUARE.train[0].output
    ex = ExecutionResult(train=[InputResult(output=reverted)] * 2, test=[InputResult(output=reverted)], train_correct=1,
                         train_total=2, train_pixel_accuracy=0.5, fingerprint="f")
    c = Candidate(task_id="s", index=0, code=f"def transform(grid):\n    return {shown}", completion=Completion(text=""),
                  augmentation=AUG.model_dump(), execution=ex)
    assert select_programs(SQUARE, [c]) == []


def test_programs_nested_past_the_parser_are_not_hard_coded_and_raise_nothing():
    for deep in ("x = " + "not " * 5000 + "1", "x = " + "-" * 5000 + "1", "x = " + "+".join(["1"] * 5000)):
        assert not is_hardcoded(deep, BIG)
        parent = cand(0, [[[2, 1]], [[3, 4]], [[5, 6]]], acc=0.5, fp="p")
        child = cand(1, [[[2, 1]], [[4, 3]], [[6, 5]]], code=deep, acc=1.0, fp="c").model_copy(update={"parent": "p"})
        assert len(refinement_examples(TASK, [parent, child])) == 1


def test_a_refinement_example_shows_the_parent_its_prompt_showed_the_first_of_its_behaviour():
    first = cand(0, [[[2, 1]], [[3, 4]], [[5, 6]]], code="def transform(grid):\n    return grid  # first", acc=0.5, fp="p")
    second = cand(1, [[[2, 1]], [[3, 4]], [[5, 6]]], code="def transform(grid):\n    return grid  # second", acc=0.5,
                  fp="p")
    child = cand(2, [[[2, 1]], [[4, 3]], [[6, 5]]], code="def transform(grid):\n    return grid[:, ::-1]", acc=1.0,
                 fp="c").model_copy(update={"parent": "p"})
    (example,) = refinement_examples(TASK, [first, second, child])
    assert example.messages == refinement_messages(TASK, first.code, first.execution)
