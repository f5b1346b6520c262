"""Run directories built by hand (no Redis, no worker): candidates and task records written as a producer would."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from arcsynth.common.models import Candidate, Completion, ExecutionResult, InputResult, RunConfig, SamplingConfig, Task
from arcsynth.common.records import EpochCounts, TaskRecord
from arcsynth.common.scoring import pixel_accuracy, select_attempts
from arcsynth.producer.rundir import RunDir

Grid = list[list[int]]


def candidate(task: Task, index: int, train: Sequence[Grid | None], test: Sequence[Grid | None], *, epoch: int = 0,
              code: str | None = "def transform(grid):\n    return grid", parent: str = "", adapter: str = "",
              seconds: float = 0.0, fingerprint: str | None = None) -> Candidate:
    """A candidate whose program produced `train` and `test` outputs (None: it raised there)."""
    results = [InputResult(output=o) if o is not None else InputResult(error="exception", message="boom")
               for o in [*train, *test]]
    correct = sum(o is not None and o == p.output for o, p in zip(train, task.train))
    acc = sum(pixel_accuracy(o, p.output) for o, p in zip(train, task.train)) / len(task.train)
    ex = ExecutionResult(train=results[:len(train)], test=results[len(train):], train_correct=correct,
                         train_total=len(task.train), train_pixel_accuracy=acc,
                         fingerprint=fingerprint or str(hash(repr([*train, *test]))), seconds=seconds)
    return Candidate(task_id=task.id, index=index, code=code, completion=Completion(text=code or "", seconds=seconds),
                     epoch=epoch, adapter=adapter, parent=parent, execution=ex)


def run_program(task: Task, fn: Callable[[np.ndarray], np.ndarray], index: int, code: str, **kw) -> Candidate:
    """A candidate that really is `fn`, applied to each of the task's inputs (errors recorded as such)."""
    def out(grid: Grid) -> Grid | None:
        try:
            g = np.asarray(fn(np.array(grid)))
            return g.tolist() if g.ndim == 2 and 1 <= g.shape[0] <= 30 and 1 <= g.shape[1] <= 30 else None
        except Exception:
            return None

    return candidate(task, index, [out(p.input) for p in task.train], [out(p.input) for p in task.test], code=code, **kw)


def record(task: Task, cands: Sequence[Candidate], status: str = "done", reason: str = "") -> TaskRecord:
    per_epoch: dict[int, EpochCounts] = {}
    for c in cands:
        e = per_epoch.setdefault(c.epoch, EpochCounts())
        e.candidates += 1
        e.valid += int(c.execution is not None and all(r.error == "none" for r in c.execution.train))
        e.train_correct += int(bool(c.execution and c.execution.all_train_correct))
    return TaskRecord(task_id=task.id, status=status, reason=reason, epochs=max((c.epoch for c in cands), default=0),
                      per_epoch=per_epoch, attempts=select_attempts(task, cands) if status == "done" else [])


def write_run(path: Path, tasks: Sequence[Task], cands: dict[str, list[Candidate]], *, run_id: str = "crafted",
              model: str = "replay", samples: int = 2, finished: Sequence[str] | None = None,
              skipped: Sequence[str] = (), **config) -> RunDir:
    """A run directory with `cands` (per task, in recorded order) and records for `finished` tasks (default all)."""
    cfg = RunConfig(run_id=run_id, dataset="crafted", task_ids=[t.id for t in tasks], model=model,
                    sampling=SamplingConfig(n=samples), **config)
    rundir = RunDir.create(path, cfg, tasks)
    # Interleave tasks, as a producer with many tasks in flight records them.
    lines = [c for i in range(max((len(v) for v in cands.values()), default=0)) for t in tasks
             for c in cands.get(t.id, [])[i:i + 1]]
    with open(rundir.candidates_file, "a") as f:
        f.writelines(c.model_dump_json() + "\n" for c in lines)
    done = [t.id for t in tasks] if finished is None else list(finished)
    with open(rundir.tasks_file, "a") as f:
        for t in tasks:
            if t.id in skipped:
                f.write(record(t, [], "skipped", "prompt too long").model_dump_json() + "\n")
            elif t.id in done:
                f.write(record(t, cands.get(t.id, [])).model_dump_json() + "\n")
    return rundir


# A task whose programs leave learning data of both kinds: relabelled examples and a refinement pair.
SWAP = Task(id="swap", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]}],
            test=[{"input": [[5, 6]], "output": [[6, 5]]}])
NINES = "def transform(grid):\n    return [[9]]"
MIRROR = "def transform(grid):\n    return grid[:, ::-1]"


def learning_candidates() -> list[Candidate]:
    """No-op (not relabelled), [[9]] twice (one example), the mirror (solves it), and the mirror as a
    refinement of the [[9]] program."""
    t = SWAP
    return [candidate(t, 0, [[[1, 2]], [[3, 4]]], [[[5, 6]]], fingerprint="noop"),
            candidate(t, 1, [[[9]], [[9]]], [[[9]]], code=NINES, fingerprint="nines"),
            candidate(t, 2, [[[2, 1]], [[4, 3]]], [[[6, 5]]], code=MIRROR, fingerprint="mirror"),
            candidate(t, 3, [[[9]], [[9]]], [[[9]]], code=NINES + " ", fingerprint="nines"),
            candidate(t, 0, [[[2, 1]], [[4, 3]]], [[[6, 5]]], code=MIRROR, fingerprint="mirror", parent="nines")]


# A: one test input. B: two test inputs. C: never sampled (its prompt was too long).
A = Task(id="a", train=[{"input": [[1]], "output": [[2]]}], test=[{"input": [[3]], "output": [[4]]}])
B = Task(id="b", train=[{"input": [[1]], "output": [[2]]}],
         test=[{"input": [[3]], "output": [[4]]}, {"input": [[5]], "output": [[6]]}])
C = Task(id="c", train=[{"input": [[1]], "output": [[2]]}], test=[{"input": [[3]], "output": [[4]]}])


def crafted() -> dict[str, list[Candidate]]:
    """Hand-checked pass@n data: a has 4 samples in epoch 0 (2 correct) and 1 in epoch 1 (correct);
    b has 2 samples, right on one of its two test inputs at best; c has none."""
    return {
        "a": [candidate(A, 0, [[[0]]], [[[9]]]),                # wrong everywhere
              candidate(A, 1, [[[2]]], [[[4]]]),                # correct (and fits train)
              candidate(A, 2, [[[0]]], [[[8]]]),                # wrong
              candidate(A, 3, [[[2]]], [[[4]]]),                # correct
              candidate(A, 0, [[[2]]], [[[4]]], epoch=1)],      # epoch 1: correct
        "b": [candidate(B, 0, [[[2]]], [[[4]], [[7]]]),         # right on test 0 only: not correct
              candidate(B, 1, [[[0]]], [[[5]], [[8]]])],        # wrong on both
    }
