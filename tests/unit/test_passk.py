"""pass@n and the two-attempt score at n, against hand computations on crafted candidates."""

from __future__ import annotations

import itertools
import math

import pytest

from arcsynth.common.models import Task
from arcsynth.common.passk import CurveBuilder, is_correct, ns_up_to, pass_at_k, run_curves, sampling_order, task_points
from arcsynth.common.scoring import score_task, select_attempts
from arcsynth.producer.summary import summarise
from tests.support.crafted import A, B, C, candidate, crafted, write_run


def brute_force(total: int, correct: int, k: int) -> float:
    """pass@k by enumerating every draw of k of the samples (the estimator's definition)."""
    samples = [True] * correct + [False] * (total - correct)
    draws = list(itertools.combinations(samples, k))
    return sum(any(d) for d in draws) / len(draws)


def test_pass_at_k_is_the_unbiased_estimator_and_uses_everything_past_the_count():
    for total in range(1, 8):
        for correct in range(total + 1):
            for k in range(1, total + 1):
                assert pass_at_k(total, correct, k) == pytest.approx(brute_force(total, correct, k))
                assert pass_at_k(total, correct, k) == pytest.approx(
                    1 - math.comb(total - correct, k) / math.comb(total, k))
    assert pass_at_k(3, 1, 8) == 1.0 and pass_at_k(3, 0, 8) == 0.0  # n > count: all samples
    assert pass_at_k(0, 0, 4) == 0.0
    assert pass_at_k(4096, 1, 512) == pytest.approx(512 / 4096)  # no overflow on large counts
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)
    assert ns_up_to(1) == [1] and ns_up_to(8) == [1, 2, 4, 8] and ns_up_to(12) == [1, 2, 4, 8, 12] and ns_up_to(0) == []


def test_correct_means_every_test_output_and_order_is_epoch_job_index():
    cands = crafted()
    assert [is_correct(A, c) for c in cands["a"]] == [False, True, False, True, True]
    assert [is_correct(B, c) for c in cands["b"]] == [False, False]
    search = [candidate(A, i, [[[0]]], [[[9]]]) for i in range(3)]
    refine = [candidate(A, i, [[[2]]], [[[4]]], parent="fp") for i in range(2)]
    later = candidate(A, 0, [[[2]]], [[[4]]], epoch=1)
    recorded = [later, refine[1], search[2], refine[0], search[0], search[1]]
    assert sampling_order(recorded) == [*search, *refine, later]  # within a job, by index
    ordered = sampling_order([search[1], refine[0], refine[1], search[0]])
    assert ordered == [search[0], search[1], refine[0], refine[1]]


def test_curves_equal_a_hand_computation():
    cands = crafted()
    curves = {c.label: c for c in run_curves([A, B, C], cands)}
    assert set(curves) == {"epoch 0", "epoch 1", "all epochs"}

    e0 = curves["epoch 0"]  # tasks a (4 samples, 2 correct) and b (2 samples, none correct); c was not sampled
    assert (e0.tasks, e0.n) == (2, [1, 2, 4])
    assert e0.pass_at_n == pytest.approx([(2 / 4 + 0) / 2, (1 - 1 / 6 + 0) / 2, (1 + 0) / 2])
    # a: its first sample is wrong (0), the first two hold a correct one (1); b: test 0 of 2 right at any n (0.5)
    assert e0.score_at_n == pytest.approx([(0 + 0.5) / 2, (1 + 0.5) / 2, (1 + 0.5) / 2])

    e1 = curves["epoch 1"]
    assert (e1.tasks, e1.n, e1.pass_at_n, e1.score_at_n) == (1, [1], [1.0], [1.0])

    every = curves["all epochs"]  # over all three tasks; a has 5 samples, 3 correct
    assert (every.tasks, every.n) == (3, [1, 2, 4, 5])
    assert every.pass_at_n == pytest.approx([(3 / 5) / 3, (1 - 1 / 10) / 3, 1 / 3, 1 / 3])
    assert every.score_at_n == pytest.approx([0.5 / 3, 1.5 / 3, 1.5 / 3, 1.5 / 3])
    assert every.at(4) == pytest.approx((1 / 3, 0.5)) and every.at(3) is None


def test_several_models_get_a_line_each():
    cands = crafted()
    tagged = {tid: [c.model_copy(update={"model": "big" if c.index % 2 else "small"}) for c in cs]
              for tid, cs in cands.items()}
    builder = CurveBuilder(default_model="run-model")
    for t in (A, B, C):
        builder.add(t, tagged.get(t.id, []))
    labels = [c.label for c in builder.curves()]
    assert labels == ["big · epoch 0", "big · all epochs", "small · epoch 0", "small · epoch 1", "small · all epochs"]
    big = builder.curves()[0]
    assert big.model == "big" and big.n == [1, 2] and big.pass_at_n == pytest.approx([0.5, 0.5])  # a: 1,3; b: 1
    assert builder.overall().pass_at_n == run_curves([A, B, C], cands)[-1].pass_at_n


def test_a_crafted_run_directory_summarises_to_the_same_numbers(tmp_path):
    rundir = write_run(tmp_path / "run", [A, B, C], crafted(), skipped=["c"])
    s = summarise(rundir.path)
    assert [c.label for c in s.curves] == ["epoch 0", "epoch 1", "all epochs"]
    assert s.curves[2].pass_at_n == pytest.approx([(3 / 5) / 3, (1 - 1 / 10) / 3, 1 / 3, 1 / 3])
    assert s.overall.n == [1, 2, 4, 5]
    # The run's own attempts (all candidates) score what the curve says at its last point.
    assert s.score == pytest.approx(s.overall.score_at_n[-1]) == pytest.approx(1.5 / 3)
    assert (s.tasks, s.solved, s.samples, s.statuses) == (3, 1, 7, {"done": 2, "skipped": 1})
    assert {e: (t.candidates, t.valid, t.train_correct, t.solved) for e, t in s.per_epoch.items()} == {
        0: (6, 6, 3, 1), 1: (1, 1, 1, 1)}
    rows = {r.task_id: r for r in s.rows}
    assert (rows["a"].candidates, rows["a"].epochs, rows["a"].best_train_accuracy, rows["a"].score) == (5, 2, 1.0, 1.0)
    assert (rows["c"].status, rows["c"].candidates, rows["c"].best_train_accuracy, rows["c"].score) == (
        "skipped", 0, None, 0.0)
    assert summarise(rundir.path, task_ids={"a"}).overall.pass_at_n == pytest.approx([3 / 5, 0.9, 1.0, 1.0])


def test_rounds_that_refine_one_program_twice_keep_their_order():
    """REx may refine a program again in the same epoch: the second round's candidates come after the
    first round's (told apart by execute job, counted per model), not interleaved with them by index;
    one round's lanes (one execute job per model) are still one job, ordered by index."""
    def refinement(i, job, model=""):
        return candidate(A, i, [[[2]]], [[[4]]], parent="fp").model_copy(update={"job": job, "model": model})

    search = [candidate(A, i, [[[0]]], [[[9]]]).model_copy(update={"job": "s"}) for i in range(2)]
    first, second = [refinement(i, "r1") for i in range(2)], [refinement(i, "r2") for i in range(2)]
    assert sampling_order([*search, *first, *second]) == [*search, *first, *second]
    lanes = [refinement(0, "r1a", "x"), refinement(1, "r1a", "x"), refinement(0, "r1b", "y"),
             refinement(0, "r2a", "x"), refinement(0, "r2b", "y")]
    assert sampling_order(lanes) == [lanes[0], lanes[2], lanes[1], lanes[3], lanes[4]]


def test_score_at_n_chooses_attempts_with_the_runs_vote():
    """A run with `--vote weighted` scores its attempts with that vote; its curve's score at n must
    too. Two train-perfect programs say 7 and 6, two programs right on one train pair of two say 8
    (the answer): the weighted vote picks 8 (1002 > 1001), the train-correct vote 7 and 6."""
    two = Task(id="w", train=[{"input": [[1]], "output": [[2]]}, {"input": [[3]], "output": [[4]]}],
               test=[{"input": [[5]], "output": [[8]]}])
    cands = [candidate(two, 0, [[[2]], [[4]]], [[[7]]]), candidate(two, 1, [[[2]], [[4]]], [[[6]]]),
             candidate(two, 2, [[[2]], [[0]]], [[[8]]]), candidate(two, 3, [[[0]], [[4]]], [[[8]]])]
    assert score_task(two, select_attempts(two, cands, "weighted")) == 1.0
    assert score_task(two, select_attempts(two, cands)) == 0.0
    assert task_points(two, cands, "weighted").full_score == 1.0
    assert run_curves([two], {"w": cands}, vote="weighted")[0].score_at_n == [0.0, 0.0, 1.0]
    builder = CurveBuilder(vote="weighted")
    builder.add(two, cands)
    assert builder.overall().score_at_n[-1] == 1.0
    assert run_curves([two], {"w": cands})[0].score_at_n[-1] == 0.0  # the default: train-correct
