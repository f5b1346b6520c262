"""pass@n and the two-attempt score at n: "would more samples have helped?" as curves over n.

Definitions (pure functions; nothing here reads files):

- A candidate is *correct* when it ran and its output on every test input equals the expected
  output (`is_correct`).
- `pass_at_k(total, correct, k)` is the unbiased estimator of Chen et al. 2021,
  `1 - C(total - correct, k) / C(total, k)`: the probability that k samples drawn without
  replacement from a task's `total` include a correct one. For `k >= total` it uses all the
  task's samples: 1 when any is correct, else 0 (the formula's own value at k = total).
- The *two-attempt score at n* of a task is the official score (`score_task`) of the attempts
  `select_attempts` picks, with the run's vote, from the task's first n candidates in sampling
  order; with fewer than n candidates, all of them (with all of them: the attempts the run chose).
- Sampling order (`sampling_order`): by epoch, then job (a search comes before the refinements of
  its epoch, refinements in the order they were recorded), then index within the job.
- A curve is the mean over tasks of these per-task values at n = 1, 2, 4, ... and the largest
  candidate count of any task in the curve (`ns_up_to`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, Field

from arcsynth.common.models import Candidate, Task
from arcsynth.common.scoring import Vote, score_task, select_attempts


class Curve(BaseModel):
    """One line of the chart: pass@n and the two-attempt score at each n, averaged over `tasks` tasks."""

    label: str
    epoch: int | None = None  # None: all epochs together
    model: str | None = None  # None: the run's only model
    tasks: int = 0
    n: list[int] = Field(default_factory=list)
    pass_at_n: list[float] = Field(default_factory=list)
    score_at_n: list[float] = Field(default_factory=list)

    def at(self, n: int) -> tuple[float, float] | None:
        """(pass@n, score at n) at a point of the curve, None when n is not one of its points."""
        return (self.pass_at_n[self.n.index(n)], self.score_at_n[self.n.index(n)]) if n in self.n else None


def pass_at_k(total: int, correct: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k for one task; k >= total uses all samples (1 if any is correct)."""
    if not 0 <= correct <= total or k < 1:
        raise ValueError(f"pass_at_k: need 0 <= correct <= total and k >= 1, got total={total} correct={correct} k={k}")
    if correct == 0:
        return 0.0
    if total - correct < k:  # every draw of k (or all, when k >= total) holds a correct sample
        return 1.0
    miss = 1.0
    for i in range(k):  # C(total-correct, k) / C(total, k) as a product: no huge integers
        miss *= (total - correct - i) / (total - i)
    return 1.0 - miss


def is_correct(task: Task, cand: Candidate) -> bool:
    """The candidate ran and matched every known test output (False when the outputs are unknown)."""
    ex = cand.execution
    if ex is None or len(ex.test) != len(task.test) or not task.has_solutions():
        return False
    return all(r.output is not None and r.output == p.output for r, p in zip(ex.test, task.test))


def sampling_order(candidates: Iterable[Candidate]) -> list[Candidate]:
    """A task's candidates in the order they were sampled (see the module docstring).

    `candidates` is in recorded order; jobs of one epoch are told apart by their `parent`, and rounds
    that refined the same program (REx may draw it again) by their execute `job`, counted per model:
    a job's lanes (one execute job per model) are one job, their candidates ordered by index."""
    rounds: dict[tuple[int, str, str], dict[str, int]] = {}
    jobs: dict[tuple[int, str, int], int] = {}
    keyed = []
    for c in candidates:
        lane = rounds.setdefault((c.epoch, c.parent, c.model), {})
        job = jobs.setdefault((c.epoch, c.parent, lane.setdefault(c.job, len(lane))), len(jobs))
        keyed.append(((c.epoch, c.parent != "", job, c.index), c))
    keyed.sort(key=lambda kc: kc[0])
    return [c for _, c in keyed]


def powers_of_two_below(limit: int) -> list[int]:
    """1, 2, 4, ... strictly below `limit`."""
    out, n = [], 1
    while n < limit:
        out.append(n)
        n *= 2
    return out


def ns_up_to(limit: int) -> list[int]:
    """The points of a curve: 1, 2, 4, ... up to `limit`, and `limit` itself; [] for 0."""
    return [*powers_of_two_below(limit), limit] if limit >= 1 else []


class TaskPoints(BaseModel):
    """One task's share of one curve: its values at the powers of two below its candidate count
    (`pass_at`, `score_at`), and with all its candidates (`full_pass`, `full_score`)."""

    count: int
    pass_at: list[float]
    score_at: list[float]
    full_pass: float
    full_score: float

    def value(self, n: int) -> tuple[float, float]:
        """(pass@n, score at n) for any n >= 1: n at or past `count` uses every candidate."""
        if n >= self.count:
            return self.full_pass, self.full_score
        k = n.bit_length() - 1
        if 1 << k != n:
            raise ValueError(f"n={n}: points below a task's candidate count are powers of two")
        return self.pass_at[k], self.score_at[k]


NEVER_SAMPLED = TaskPoints(count=0, pass_at=[], score_at=[], full_pass=0.0, full_score=0.0)


def task_points(task: Task, ordered: Sequence[Candidate], vote: Vote = "train-correct") -> TaskPoints:
    """One task's values for a curve; `ordered` is in sampling order and may be empty (all zero);
    `vote`: how the run chooses its attempts (`select_attempts`)."""
    total = len(ordered)
    correct = sum(is_correct(task, c) for c in ordered)
    below = powers_of_two_below(total)

    def score(n: int) -> float:
        return score_task(task, select_attempts(task, ordered[:n], vote)) if total else 0.0

    return TaskPoints(count=total, pass_at=[pass_at_k(total, correct, n) for n in below],
                      score_at=[score(n) for n in below], full_pass=1.0 if correct else 0.0, full_score=score(total))


def curve(label: str, points: Iterable[TaskPoints], epoch: int | None = None, model: str | None = None) -> Curve:
    """Average tasks' points into a curve at n = 1, 2, 4, ... up to the largest candidate count."""
    points = list(points)
    if not points:
        return Curve(label=label, epoch=epoch, model=model)
    ns = ns_up_to(max(p.count for p in points))
    values = [[p.value(n) for p in points] for n in ns]
    return Curve(label=label, epoch=epoch, model=model, tasks=len(points), n=ns,
                 pass_at_n=[sum(v[0] for v in vs) / len(points) for vs in values],
                 score_at_n=[sum(v[1] for v in vs) / len(points) for vs in values])


class CurveBuilder:
    """Accumulates a run's curves one task at a time (a run's candidates never need to be in memory at once).

    One curve per epoch (per model and epoch when candidates name several models through a
    `model` field), over the tasks that epoch sampled; with several epochs, one more curve per
    model over all epochs together and every task added (a task never sampled counts 0). Tasks
    without known test outputs are ignored."""

    def __init__(self, default_model: str = "", vote: Vote = "train-correct") -> None:
        self.default_model = default_model
        self.vote: Vote = vote  # the run's `vote`: the score at n chooses attempts as the run did
        self.by_group: dict[tuple[str, int | None], list[TaskPoints]] = {}
        self.tasks = 0
        self.overall_points: list[TaskPoints] = []

    def add(self, task: Task, candidates: Iterable[Candidate]) -> None:
        """Add one task with its candidates in recorded order."""
        if not task.has_solutions():
            return
        self.tasks += 1
        cands = list(candidates)
        everything = task_points(task, sampling_order(cands), self.vote)
        self.overall_points.append(everything)
        per_model: dict[str, list[Candidate]] = {}
        for c in cands:
            per_model.setdefault(getattr(c, "model", "") or self.default_model, []).append(c)
        for m, mine in per_model.items():
            model_all = everything if len(per_model) == 1 else task_points(task, sampling_order(mine), self.vote)
            self.by_group.setdefault((m, None), []).append(model_all)
            epochs = sorted({c.epoch for c in mine})
            for e in epochs:
                pts = model_all if len(epochs) == 1 else task_points(
                    task, sampling_order(c for c in mine if c.epoch == e), self.vote)
                self.by_group.setdefault((m, e), []).append(pts)

    def curves(self) -> list[Curve]:
        models = sorted({m for m, _ in self.by_group})
        epochs = sorted({e for _, e in self.by_group if e is not None})
        several = len(models) > 1
        out = []
        for m in models:
            prefix, model = (f"{m} · ", m) if several else ("", None)
            for e in epochs:
                if (m, e) in self.by_group:
                    out.append(curve(f"{prefix}epoch {e}", self.by_group[(m, e)], epoch=e, model=model))
            if len(epochs) > 1:
                pts = self.by_group[(m, None)]
                pts = pts + [NEVER_SAMPLED] * (self.tasks - len(pts))  # tasks this model never sampled
                out.append(curve(f"{prefix}all epochs", pts, model=model))
        return out

    def overall(self) -> Curve:
        """All epochs and models together, over every task added: what `compare` puts side by side."""
        return curve("all epochs", self.overall_points)


def run_curves(tasks: Sequence[Task], candidates: Mapping[str, Sequence[Candidate]], default_model: str = "",
               vote: Vote = "train-correct") -> list[Curve]:
    """`CurveBuilder.curves()` for tasks whose candidates (recorded order) are all at hand."""
    builder = CurveBuilder(default_model, vote)
    for t in tasks:
        builder.add(t, candidates.get(t.id, ()))
    return builder.curves()
