"""The search-and-learn policy, branch by branch, without Redis, Celery or files."""

from __future__ import annotations

from arcsynth.common.jobs import ExecuteRequest, FinetuneRequest, SampleRequest
from arcsynth.common.models import (
    Candidate,
    Completion,
    ExecutionResult,
    InputResult,
    LearnConfig,
    RunConfig,
    SamplingConfig,
    Task,
)
from arcsynth.common.records import JobRecord, TaskStatus
from arcsynth.producer.policy import (
    Failed,
    Finetuned,
    Finish,
    Searched,
    Stopped,
    TaskState,
    decide,
    decide_or_fail,
    first_job,
    requests,
    rex_pick,
    run_finetune_request,
    task_record,
    training_examples,
)

# Swap the two cells of a row: [[1, 2]] -> [[2, 1]].
TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]}],
            test=[{"input": [[5, 6]], "output": [[6, 5]]}])
SWAP = "def transform(grid):\n    return grid[:, ::-1]"


def config(**learn) -> RunConfig:
    return RunConfig(run_id="r", dataset="d", task_ids=["t"], model="m", sampling=SamplingConfig(n=4),
                     learn=LearnConfig(**learn))


def cand(index: int, outputs: list, epoch: int = 0, code: str = "def transform(grid):\n    return grid",
         fingerprint: str | None = None, parent: str = "") -> Candidate:
    """A candidate whose train outputs are `outputs` (None: it raised); its test output is the right one
    when every train output is, else the test input unchanged."""
    train = [InputResult(output=o) if o is not None else InputResult(error="exception", message="boom") for o in outputs]
    correct = sum(1 for r, p in zip(train, TASK.train) if r.output == p.output)
    acc = sum(1.0 if r.output == p.output else 0.5 if r.output is not None else 0.0 for r, p in zip(train, TASK.train))
    test = InputResult(output=[[6, 5]] if correct == len(TASK.train) else [[5, 6]])
    ex = ExecutionResult(train=train, test=[test], train_correct=correct, train_total=len(TASK.train),
                         train_pixel_accuracy=acc / len(TASK.train), fingerprint=fingerprint or f"fp{index}-{epoch}")
    return Candidate(task_id="t", index=index, code=code, completion=Completion(text=code), epoch=epoch, parent=parent,
                     execution=ex)


SOLVED = [[2, 1]], [[4, 3]]
HALF = [[2, 1]], [[3, 4]]  # right on one pair, a no-op on the other: worth refining, usable to relabel
NOOP = [[1, 2]], [[3, 4]]


def state(cands: list[Candidate], step: str = "search", epoch: int = 0, adapter: str = "", parent: str = "",
          refined: set | None = None) -> TaskState:
    job = JobRecord(step=step, epoch=epoch, adapter=adapter, ids=["a", "b"], parent=parent)
    return TaskState(TASK, job, list(cands), list(refined or ()))


def test_first_job_is_a_search_at_epoch_0_through_the_runs_adapter():
    job = first_job("t", config().model_copy(update={"adapter": "start"}))
    assert (job.step, job.epoch, job.adapter, job.ids, job.augmentation) == ("search", 0, "start", [], None)


def test_solved_task_stops_at_stop_after_1():
    assert decide(state([cand(0, list(SOLVED))]), Searched(), config(epochs=3)) == Finish(TaskStatus.DONE)


def test_solved_task_keeps_learning_with_keep_searching():
    job = decide(state([cand(0, list(SOLVED))]), Searched(), config(epochs=3, stop_after=None))
    assert isinstance(job, JobRecord) and (job.step, job.epoch) == ("finetune", 0)


def test_unsolved_task_is_refined_while_rounds_are_left_best_program_first():
    cands = [cand(0, list(NOOP)), cand(1, list(HALF)), cand(2, [None, None])]
    job = decide(state(cands), Searched(), config(refine_rounds=2))
    assert isinstance(job, JobRecord) and job.step == "refine" and job.parent == "fp1-0"
    # One round used on fp1: the next best unrefined program is the no-op (it produced output).
    job = decide(state(cands, refined=[(0, "fp1-0")]), Searched(), config(refine_rounds=2))
    assert isinstance(job, JobRecord) and job.parent == "fp0-0"


def test_no_refinement_when_rounds_are_used_up_or_nothing_is_worth_fixing():
    cands = [cand(0, list(NOOP)), cand(1, list(HALF))]
    used = state(cands, refined=[(0, "fp1-0")])
    assert decide(used, Searched(), config(refine_rounds=1)) == Finish(TaskStatus.DONE)  # epochs=0: search only
    crashed = state([cand(0, [None, None])])
    assert decide(crashed, Searched(), config(refine_rounds=3)) == Finish(TaskStatus.DONE)
    # Rounds of an earlier epoch do not count against this one.
    later = state([cand(0, list(HALF), epoch=1)], epoch=1, refined=[(0, "fp0-1"), (0, "x")])
    job = decide(later, Searched(), config(refine_rounds=1, epochs=1))
    assert isinstance(job, JobRecord) and job.step == "refine" and job.epoch == 1


def test_epochs_exhausted_ends_the_task():
    st = state([cand(0, list(HALF), epoch=2)], epoch=2)
    assert decide(st, Searched(), config(epochs=2)) == Finish(TaskStatus.DONE)


def test_nothing_to_learn_from_when_no_program_ran_cleanly():
    st = state([cand(0, [None, None]), cand(1, list(NOOP))])  # a crash and a no-op: nothing to relabel
    assert decide(st, Searched(), config(epochs=1)) == Finish(
        TaskStatus.DONE, "nothing to learn from: no program ran cleanly")


def test_unsolved_task_with_programs_to_relabel_is_fine_tuned_from_its_adapter():
    job = decide(state([cand(0, list(HALF))], adapter="a0"), Searched(), config(epochs=1))
    assert isinstance(job, JobRecord) and (job.step, job.epoch, job.adapter) == ("finetune", 0, "a0")


def test_finetuned_task_searches_the_next_epoch_through_the_new_adapter():
    st = state([cand(0, list(HALF))], step="finetune", adapter="a0")
    job = decide(st, Finetuned("a1"), config(epochs=2))
    assert isinstance(job, JobRecord) and (job.step, job.epoch, job.adapter) == ("search", 1, "a1")


def test_skipped_prompt_ends_a_search_but_not_a_refinement():
    assert decide(state([]), Searched(skipped="too long"), config()) == Finish(TaskStatus.SKIPPED, "too long")
    refining = state([cand(0, list(HALF))], step="refine", parent="fp0-0", refined=[(0, "fp0-0")])
    assert decide(refining, Searched(skipped="too long"), config(refine_rounds=1)) == Finish(TaskStatus.DONE)


def test_failed_job_and_stopped_run_end_the_task_with_their_reason():
    assert decide(state([]), Failed("execute", "ValueError: x"), config()) == Finish(TaskStatus.FAILED, "execute: ValueError: x")
    assert decide(state([]), Stopped(TaskStatus.CANCELLED, "cancelled"), config()) == Finish(
        TaskStatus.CANCELLED, "cancelled")


def test_a_decision_that_raises_fails_its_task_alone(monkeypatch):
    import arcsynth.producer.policy as policy

    cands = [cand(0, list(HALF))]
    assert decide_or_fail(state(cands), Searched(), config(refine_rounds=1)) == decide(
        state(cands), Searched(), config(refine_rounds=1))

    def broken(*_):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(policy, "refinement_parent", broken)
    assert decide_or_fail(state(cands), Searched(), config(refine_rounds=1)) == Finish(
        TaskStatus.FAILED, "the policy failed: ZeroDivisionError: division by zero")
    # A stop still ends the task with its own reason: the branch that raised is never reached.
    assert decide_or_fail(state(cands), Stopped(TaskStatus.CANCELLED, "cancelled"), config()) == Finish(
        TaskStatus.CANCELLED, "cancelled")


def test_augmented_search_is_deterministic_per_task_and_epoch():
    a, b = first_job("t", config(augment=True)), first_job("t", config(augment=True))
    assert a.augmentation is not None and a == b
    st = state([cand(0, list(HALF))], step="finetune")
    nxt = decide(st, Finetuned("a1"), config(augment=True, epochs=1))
    assert isinstance(nxt, JobRecord) and nxt.augmentation is not None


def test_requests_for_each_step():
    cfg = config(epochs=1, samples_per_epoch=2, refine_samples=3)
    [(sample, execute)] = requests(state([], adapter="a"), cfg)
    assert isinstance(sample, SampleRequest) and isinstance(execute, ExecuteRequest)
    assert (sample.sampling.n, sample.adapter, sample.refine, execute.epoch) == (4, "a", None, 0)
    [(sample, _)] = requests(state([], epoch=1), cfg)
    assert sample.sampling.n == 2  # later epochs sample samples_per_epoch
    parent = cand(0, list(HALF), code=SWAP.replace("::-1", "::1"))
    [(sample, _)] = requests(state([parent], step="refine", parent="fp0-0"), cfg)
    assert sample.sampling.n == 3 and sample.refine is not None and sample.refine.code == parent.code
    [ft] = requests(state([parent], step="finetune", adapter="a"), cfg)
    assert isinstance(ft, FinetuneRequest) and ft.start_adapter == "a" and ft.base_model == "m" and len(ft.examples) == 1
    [ft] = requests(state([parent], step="finetune", adapter="a"), config(epochs=1, from_base=True))
    assert isinstance(ft, FinetuneRequest) and ft.start_adapter == ""


def test_task_record_counts_per_epoch_and_picks_attempts():
    st = state([cand(0, list(SOLVED)), cand(1, [None, None]), cand(0, list(HALF), epoch=1)], epoch=1, adapter="a1")
    rec = task_record(st, Finish(TaskStatus.DONE))
    assert rec.status == TaskStatus.DONE and rec.epochs == 1 and rec.adapter == "a1"
    assert {e: (c.candidates, c.valid, c.train_correct) for e, c in rec.per_epoch.items()} == {0: (2, 1, 1), 1: (1, 1, 0)}
    assert rec.attempts[0].attempt_1 == [[6, 5]]  # the train-correct program's test output comes first


def test_stop_after_counts_distinct_train_perfect_programs():
    one = cand(0, list(SOLVED), code=SWAP)
    same = cand(1, list(SOLVED), code=SWAP.replace("\n", "  \n\n"))  # the same program, other whitespace
    other = cand(2, list(SOLVED), code="def transform(grid):\n    return [row[::-1] for row in grid]")
    half = cand(3, list(HALF))
    cfg = config(stop_after=2, refine_rounds=2, epochs=1)
    job = decide(state([one, same, half]), Searched(), cfg)  # one distinct perfect program: keep refining
    assert isinstance(job, JobRecord) and job.step == "refine" and job.parent == "fp3-0"
    assert decide(state([one, same, other, half]), Searched(), cfg) == Finish(TaskStatus.DONE)
    # With no rounds left it learns on, instead of stopping at the first perfect program.
    job = decide(state([one, half], refined=[(0, "fp3-0")] * 2), Searched(), cfg)
    assert isinstance(job, JobRecord) and job.step == "finetune"


def test_run_scope_waits_for_the_runs_adapter_even_with_nothing_of_its_own_to_learn():
    job = decide(state([cand(0, [None, None])], adapter="a0"), Searched(), config(epochs=1, scope="run"))
    assert isinstance(job, JobRecord) and (job.step, job.epoch, job.adapter, job.stages) == ("learn", 0, "a0", ())
    nxt = decide(state([], step="learn", adapter="a0"), Finetuned("run-a1"), config(epochs=2, scope="run"))
    assert isinstance(nxt, JobRecord) and (nxt.step, nxt.epoch, nxt.adapter) == ("search", 1, "run-a1")


def test_run_finetune_request_pools_every_tasks_examples_in_run_order():
    cfg = config(epochs=1, scope="run").model_copy(update={"task_ids": ["b", "a", "c"]})
    ex = training_examples(state([cand(0, list(HALF))]), cfg.learn)
    req = run_finetune_request({"a": ex, "b": ex + ex, "c": []}, cfg, "prev")
    assert req is not None and req.sources == {"b": 2, "a": 1} and len(req.examples) == 3 and req.start_adapter == "prev"
    assert run_finetune_request({"a": [], "c": []}, cfg, "prev") is None


def test_rex_draws_any_program_and_counts_its_refinements():
    cands = [cand(0, list(HALF)), cand(1, list(NOOP))]
    cfg = config(refine_rounds=50, refine_strategy="rex")
    picks = {decide(state(cands, refined=[(0, "x")] * r), Searched(), cfg).parent for r in range(40)}
    assert picks == {"fp0-0", "fp1-0"}  # not always the best: the worse one is drawn too
    # Deterministic: the same state draws the same program.
    assert decide(state(cands), Searched(), cfg) == decide(state(cands), Searched(), cfg)


def _beta_pdf(x, a, b):
    import math

    import numpy as np

    return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))


def test_rex_picks_a_worse_program_at_the_rate_the_beta_draws_predict():
    """P(θ_worse > θ_best) from the two Beta densities, against 20,000 seeded draws."""
    import random

    import numpy as np

    c, options = 20.0, [("best", 0.9, 0), ("worse", 0.7, 1)]
    (a1, b1), (a2, b2) = [(1 + c * h, 1 + c * (1 - h) + n) for _, h, n in options]
    x = np.linspace(1e-6, 1 - 1e-6, 200001)
    dx = x[1] - x[0]
    cdf_best = np.cumsum(_beta_pdf(x, a1, b1)) * dx
    expected = float(np.sum(_beta_pdf(x, a2, b2) * cdf_best) * dx)  # P(θ_best < θ_worse)
    draws = 20000
    rate = sum(rex_pick(options, c, random.Random(i)) == "worse" for i in range(draws)) / draws
    sigma = (expected * (1 - expected) / draws) ** 0.5
    assert 0.02 < expected < 0.5 and abs(rate - expected) < 4 * sigma, (rate, expected)


def test_learning_from_refinements_adds_corrections_that_beat_their_parent():
    parent = cand(0, list(HALF), code="def transform(grid):\n    return grid", fingerprint="p")
    better = cand(1, list(SOLVED), code=SWAP, parent="p")
    worse = cand(2, list(NOOP), code="def transform(grid):\n    return grid + 0", parent="p")
    st = state([parent, better, worse])
    plain = training_examples(st, config(epochs=1).learn)
    both = training_examples(st, config(epochs=1, learn_from_refinements=True).learn)
    assert len(both) == len(plain) + 1
    assert both[-1].messages[-2]["role"] == "assistant" and both[-1].completion.endswith(f"{SWAP}\n```")


# --- several models in one run ---------------------------------------------------------------------
def two_models(**learn) -> RunConfig:
    return config(**learn).model_copy(update={"models": ["m", "n"], "samples_by_model": {"n": 2}})


def test_each_model_samples_in_its_own_lane_with_its_own_budget():
    cfg = two_models(epochs=1)
    job = first_job("t", cfg)
    assert job.models == ["m", "n"] and job.stages == ("sample", "execute") * 2
    lanes = requests(TaskState(TASK, job.model_copy(update={"ids": list("abcd")})), cfg)
    assert [(s.model, s.sampling.n) for s, _ in lanes] == [("m", 4), ("n", 2)]


def test_each_model_learns_from_its_own_programs_and_samples_through_its_own_adapter():
    cfg = two_models(epochs=2)
    mine = cand(0, list(HALF)).model_copy(update={"model": "m"})
    theirs = cand(1, [None, None]).model_copy(update={"model": "n"})  # nothing to relabel for model n
    st = TaskState(TASK, first_job("t", cfg).model_copy(update={"ids": list("abcd")}), [mine, theirs])
    job = decide(st, Searched(), cfg)
    assert isinstance(job, JobRecord) and job.step == "finetune" and job.models == ["m"]
    [ft] = requests(TaskState(TASK, job.model_copy(update={"ids": ["f"]}), [mine, theirs]), cfg)
    assert isinstance(ft, FinetuneRequest) and ft.base_model == "m" and len(ft.examples) == 1
    nxt = decide(TaskState(TASK, job, [mine, theirs]), Finetuned("am", {"m": "am"}), cfg)
    assert isinstance(nxt, JobRecord) and nxt.models == ["m", "n"] and nxt.epoch == 1
    assert (nxt.adapter_for("m"), nxt.adapter_for("n")) == ("am", "")
    # Model n's adapter is kept when only model m trains again.
    later = nxt.model_copy(update={"adapters": {"n": "an"}})
    again = decide(TaskState(TASK, later), Finetuned("am2", {"m": "am2"}), cfg)
    assert isinstance(again, JobRecord) and (again.adapter_for("m"), again.adapter_for("n")) == ("am2", "an")


def test_the_vote_pools_every_models_programs():
    def answer(index: int, model: str, test_output: list) -> Candidate:
        c = cand(index, list(SOLVED))
        ex = c.execution.model_copy(update={"test": [InputResult(output=test_output)]})
        return c.model_copy(update={"model": model, "execution": ex})

    a, b = [[1, 1]], [[6, 5]]
    by_m = [answer(0, "m", a), answer(1, "m", a), answer(2, "m", b)]
    by_n = [answer(3, "n", b), answer(4, "n", b)]
    job = first_job("t", two_models())
    assert task_record(TaskState(TASK, job, by_m), Finish(TaskStatus.DONE)).attempts[0].attempt_1 == a
    assert task_record(TaskState(TASK, job, by_m + by_n), Finish(TaskStatus.DONE)).attempts[0].attempt_1 == b
