"""Where a producer picks a run up: the tasks already finished, and those in flight with their jobs.

A producer killed at any point is replaced by a new one on the same run directory. Finished
tasks (in tasks.jsonl) are not touched; a task whose job is recorded in Redis re-attaches to that
job by id, with the candidates of its earlier jobs read back from candidates.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arcsynth.common.models import TaskStatus
from arcsynth.producer.policy import TaskState
from arcsynth.producer.rundir import RunDir
from arcsynth.producer.runstate import RunState


@dataclass
class Recovered:
    finished: dict[str, TaskStatus] = field(default_factory=dict)
    active: dict[str, TaskState] = field(default_factory=dict)
    # (task, epoch, parent) whose candidates are already on disk; parent "" for a search
    recorded: set[tuple[str, int, str]] = field(default_factory=set)


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
    out.active = {t.id: TaskState(t, waiting[t.id]) for t in rundir.iter_tasks() if t.id in waiting}
    for c in rundir.candidates(set(out.active)):
        st = out.active[c.task_id]
        st.candidates.append(c)
        out.recorded.add((c.task_id, c.epoch, c.parent))
        if c.parent:
            st.refined.add((c.epoch, c.parent))
    for st in out.active.values():
        if st.job.step == "refine":
            st.refined.add((st.job.epoch, st.job.parent))
    return out
