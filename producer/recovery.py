"""Where a producer picks a run up: the tasks already finished, and those in flight with their jobs.

A producer killed at any point is replaced by a new one on the same run directory. Finished
tasks (in tasks.jsonl) are not touched; a task whose job is recorded in Redis re-attaches to that
job by id, with the candidates of its earlier jobs read back from candidates.jsonl. A task that
waits for the run's adapter (scope "run") stays waiting, its candidates on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arcsynth.common.records import TaskStatus
from arcsynth.producer.policy import TaskState
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState


@dataclass
class Recovered:
    finished: dict[str, TaskStatus] = field(default_factory=dict)
    active: dict[str, TaskState] = field(default_factory=dict)
    waiting: dict[str, TaskState] = field(default_factory=dict)  # for the run's adapter (scope "run")
    recorded: set[str] = field(default_factory=set)  # execute jobs whose candidates are already on disk


def recover(rundir: RunDir, state: RunState) -> Recovered:
    """Read back the run's progress from its directory and its Redis state (cheap on a fresh run)."""
    rundir.repair()
    out = Recovered(finished={tid: r.status for tid, r in rundir.records().items()})
    jobs = state.jobs()
    for tid in set(jobs) & set(out.finished):
        state.drop_job(tid)  # finished, but the producer died before dropping its job
    waiting = {tid: job for tid, job in jobs.items() if tid not in out.finished}
    if not waiting:
        return out
    for t in rundir.iter_tasks():
        if t.id in waiting:
            job = waiting[t.id]
            (out.waiting if job.step == "learn" else out.active)[t.id] = TaskState(t, job)
    out.recorded = load_candidates(rundir, out.active)
    return out


def load_candidates(rundir: RunDir, states: dict[str, TaskState]) -> set[str]:
    """Fill each state's candidates and refinements from disk (one pass over candidates.jsonl);
    return the ids of the execute jobs they came from. A refinement counts once per job: a job of a
    run with several models has one execute job per model, so a (task, epoch, parent) was refined
    as many times as the model with the most execute jobs for it."""
    jobs: set[str] = set()
    refinements: dict[str, dict[tuple[int, str], dict[str, set[str]]]] = {}
    for c in rundir.candidates(set(states)):
        st = states[c.task_id]
        st.candidates.append(c)
        if c.parent:
            by_model = refinements.setdefault(c.task_id, {}).setdefault((c.epoch, c.parent), {})
            by_model.setdefault(c.model, set()).add(c.job)
        jobs.add(c.job)
    for task_id, rounds in refinements.items():
        for (epoch, parent), by_model in rounds.items():
            states[task_id].refined += [(epoch, parent)] * max(map(len, by_model.values()))
    for st in states.values():
        if st.job.step == "refine" and st.job.ids and not any(ids[-1] in jobs for _, ids in st.job.lanes()):
            st.refined.append((st.job.epoch, st.job.parent))  # sent, not yet recorded
    return jobs
