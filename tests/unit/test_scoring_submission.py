"""The official score, attempt selection and the Kaggle submission format."""


import pytest

from arcsynth.common.models import Attempt, Candidate, Completion, ExecutionResult, InputResult, Task
from arcsynth.common.scoring import PLACEHOLDER, pixel_accuracy, score_run, score_task, select_attempts
from arcsynth.common.submission import SubmissionError, build_submission, validate_submission

TASK = Task(id="t", train=[{"input": [[1]], "output": [[2]]}, {"input": [[3]], "output": [[4]]}],
            test=[{"input": [[5]], "output": [[6]]}, {"input": [[7]], "output": [[8]]}])


def cand(i, train_outs, test_outs, correct):
    train = [InputResult(output=[[o]]) for o in train_outs]
    ex = ExecutionResult(train=train, test=[InputResult(output=o) if o else InputResult(error="exception")
                                            for o in test_outs],
                         train_correct=correct, train_total=2,
                         train_pixel_accuracy=sum(pixel_accuracy([[o]], p.output) for o, p in zip(train_outs, TASK.train)) / 2)
    return Candidate(task_id="t", index=i, code="def transform(g): ...", completion=Completion(text=""), execution=ex)


def test_pixel_accuracy():
    assert pixel_accuracy([[1, 2]], [[1, 3]]) == 0.5
    assert pixel_accuracy([[1]], [[1, 2]]) == 0.0
    assert pixel_accuracy(None, [[1]]) == 0.0


def test_votes_among_train_correct_programs_then_accuracy():
    cands = [
        cand(0, (2, 4), [[[6]], [[9]]], 2),   # correct on train
        cand(1, (2, 4), [[[6]], [[8]]], 2),   # correct on train, agrees on test 0
        cand(2, (2, 4), [[[1]], [[8]]], 2),
        cand(3, (0, 0), [[[3]], [[3]]], 0),   # wrong everywhere: ranks last
    ]
    a = select_attempts(TASK, cands)
    assert a[0].attempt_1 == [[6]] and a[0].attempt_2 == [[1]]
    assert a[1].attempt_1 == [[8]] and a[1].attempt_2 == [[9]]
    assert score_task(TASK, a) == 1.0


def test_accuracy_decides_when_nothing_is_train_correct():
    cands = [cand(0, (2, 0), [[[6]], [[8]]], 1), cand(1, (0, 0), [[[1]], [[1]]], 0)]
    a = select_attempts(TASK, cands)
    assert a[0].attempt_1 == [[6]] and a[0].attempt_2 == [[1]]


def test_distinct_attempts_and_placeholders():
    a = select_attempts(TASK, [cand(0, (2, 4), [[[6]], [[8]]], 2)])
    assert a[0].attempt_1 == a[0].attempt_2 == [[6]]
    a = select_attempts(TASK, [])
    assert a[0].attempt_1 == PLACEHOLDER
    # A candidate that failed a test input cannot supply attempts.
    assert select_attempts(TASK, [cand(0, (2, 4), [[[6]], None], 2)])[0].attempt_1 == PLACEHOLDER


def test_score_rule_either_attempt_fraction_and_mean():
    half = [Attempt(attempt_1=[[0]], attempt_2=[[6]]), Attempt(attempt_1=[[0]], attempt_2=[[0]])]
    assert score_task(TASK, half) == 0.5
    other = Task(id="u", train=TASK.train, test=[{"input": [[1]], "output": [[1]]}])
    run = score_run([TASK, other], {"t": half, "u": [Attempt(attempt_1=[[1]], attempt_2=[[0]])]})
    assert run.score == pytest.approx(0.75) and run.tasks == {"t": 0.5, "u": 1.0}
    assert run.finished == 2 and run.total == 2
    unknown = Task(id="v", train=TASK.train, test=[{"input": [[1]]}])
    assert score_run([TASK, unknown], {"t": half}) is None  # a task without known outputs: no score


def test_submission_has_every_task_and_test_input():
    other = Task(id="u", train=TASK.train, test=[{"input": [[1]]}])
    data = build_submission([TASK, other], {"t": select_attempts(TASK, [])})
    validate_submission(data, [TASK, other])
    assert set(data) == {"t", "u"} and len(data["t"]) == 2 and len(data["u"]) == 1
    assert data["u"][0] == {"attempt_1": [[0]], "attempt_2": [[0]]}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("t"), "task t is missing"),
    (lambda d: d["t"].pop(), "1 entries for 2 test inputs"),
    (lambda d: d["t"][0].pop("attempt_2"), r"field t.0.attempt_2"),
    (lambda d: d["t"][0].update(attempt_1=[[1, 2], [3]]), r"field t.0.attempt_1"),
    (lambda d: d.update(zzz=[]), "task zzz is not in the dataset"),
])
def test_validator_names_the_problem(mutate, message):
    data = build_submission([TASK], {})
    validate_submission(data, [TASK])
    mutate(data)
    with pytest.raises(SubmissionError, match=message):
        validate_submission(data, [TASK])


def test_weighted_vote_pools_half_right_programs_where_train_correct_does_not():
    """One train-perfect program says 7; two programs right on one train pair of two say 8
    (1 + 500 each: 1002 > 1001); three wrong programs say 9 (weight 1 each)."""
    cands = [
        cand(0, (2, 4), [[[7]], [[7]]], 2),
        cand(1, (2, 0), [[[8]], [[8]]], 1),
        cand(2, (0, 4), [[[8]], [[8]]], 1),
        *(cand(3 + i, (0, 0), [[[9]], [[9]]], 0) for i in range(3)),
    ]
    plain = select_attempts(TASK, cands)
    weighted = select_attempts(TASK, cands, vote="weighted")
    assert (plain[0].attempt_1, plain[0].attempt_2) == ([[7]], [[8]])
    assert (weighted[0].attempt_1, weighted[0].attempt_2) == ([[8]], [[7]])
    # Many wrong programs outvote one half-right program only past its weight (501): 502 of them do.
    crowd = [cand(1, (2, 0), [[[8]], [[8]]], 1), *(cand(10 + i, (0, 0), [[[9]], [[9]]], 0) for i in range(502))]
    assert select_attempts(TASK, crowd, vote="weighted")[0].attempt_1 == [[9]]
    assert select_attempts(TASK, crowd[:-2], vote="weighted")[0].attempt_1 == [[8]]


@pytest.mark.parametrize("vote", ["train-correct", "weighted"])
def test_tied_candidates_give_the_same_attempts_in_any_order(vote):
    """Three train-perfect programs, each the first of its job (index 0: jobs and model lanes are
    recorded as they finish), with different test outputs: the attempts must not depend on the order."""
    import itertools

    cands = [cand(0, [2, 4], [[[n]], [[n]]], 2) for n in (1, 3, 9)]
    picks = {tuple(a.attempt_1[0][0] for a in select_attempts(TASK, order, vote)) for order in itertools.permutations(cands)}
    assert len(picks) == 1


def test_weighted_votes_are_exact_so_ties_never_depend_on_the_order_of_candidates():
    """Three train pairs: programs right on 1, 2 and 3 of them say 2 (1 + 1000/3 + 1 + 2000/3 + 1 + 1000
    = 2003 exactly), programs right on 3, 3 and 0 say 1 (also 2003). The tie goes to the grid, in
    every order: floats summed 1000/3 + 2000/3 + 1000 in some orders to 2002.9999999999998."""
    import itertools

    three = Task(id="t3", train=[{"input": [[1]], "output": [[2]]}] * 3, test=[{"input": [[5]]}])

    def voter(correct, out):
        ex = ExecutionResult(train=[InputResult(output=[[2]])] * 3, test=[InputResult(output=out)],
                             train_correct=correct, train_total=3, train_pixel_accuracy=0.5)
        return Candidate(task_id="t3", index=0, code="x", completion=Completion(text=""), execution=ex)

    cands = [voter(1, [[2]]), voter(2, [[2]]), voter(3, [[2]]), voter(3, [[1]]), voter(3, [[1]]), voter(0, [[1]])]
    picks = {tuple(map(str, (a.attempt_1, a.attempt_2))) for order in itertools.permutations(cands)
             for a in select_attempts(three, order, vote="weighted")}
    assert picks == {("[[2]]", "[[1]]")}
