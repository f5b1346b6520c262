"""A run cannot reach another process of its user: not another worker's run, nor (rootless) the worker.

Runs share a uid (65534, or a rootless worker's own) and no PID namespace, so a pid names any of them;
`kill` is filtered to the run itself, and so must be every call that changes another process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from arcsynth.common.models import Task
from arcsynth.workers.sandbox.executor import Executor

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}], test=[{"input": [[5, 6]]}])
VICTIM = "import time\ndef transform(grid):\n    time.sleep(1.5)\n    x = list(range(200000))\n    return grid[:, ::-1]"
# Every pid near its own, as another worker's run would: its memory limit, priority, scheduling.
REACH = """import os, resource
def transform(grid):
    me, hit = os.getpid(), 0
    for pid in range(max(2, me - 3000), me + 3000):
        if pid == me:
            continue
        for call in (lambda: resource.prlimit(pid, resource.RLIMIT_AS, (1 << 20, 1 << 20)),
                     lambda: os.setpriority(os.PRIO_PROCESS, pid, 19),
                     lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))):
            try:
                call()
                hit += 1
            except OSError:
                pass
    for which in (os.PRIO_USER,):
        try:
            os.setpriority(which, 0, 19)
            hit += 1
        except OSError:
            pass
    return [[min(hit, 9)]]
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_for_a_run(ex: Executor, timeout_s: float = 30.0) -> None:
    """Until the helper's spawner has a child (a run or job process): the victim's program has started."""
    deadline = time.monotonic() + timeout_s
    while not any(_children(spawner) for spawner in _children(ex._proc.pid)):
        assert time.monotonic() < deadline, "the victim's run never started"
        time.sleep(0.005)  # polling for the process, not waiting on luck


# Every process group of its session but its own worker's: another worker's run leads one. Joined, kill(0)
# (allowed: "itself or its own group") would reach every process of it.
JOIN = """import os, signal
def transform(grid):
    me, ours, joined = os.getpid(), os.getpgid(os.getppid()), 0
    for pid in range(max(2, me - 3000), me + 3000):
        try:
            if pid in (me, ours) or os.getpgid(pid) != pid:
                continue
            os.setpgid(0, pid)
        except OSError:
            continue
        joined += 1
        os.kill(0, signal.SIGKILL)
    return [[min(joined, 9)]]
"""


@pytest.mark.parametrize("isolation", ["run", "job"])
@pytest.mark.parametrize("attack", ["reach", "join"])
def test_a_run_cannot_change_another_workers_run(isolation, attack):
    """Before the fixes the attacker set the other run's memory limit to 1 MiB (`reach`: its verdicts were
    `memory`), or joined its process group with setpgid and killed it with kill(0) (`join`: `crashed`;
    a rootless run could join its worker's group the same way)."""
    victim, attacker = Executor(timeout_s=4.0, memory_mb=512, isolation=isolation), Executor(timeout_s=4.0)
    victim.start()
    attacker.start()
    try:
        if not victim.layers.get("seccomp"):
            pytest.skip("no seccomp filter on this machine")
        graded = {}
        thread = threading.Thread(target=lambda: graded.setdefault("victim", victim.grade(TASK, VICTIM)))
        thread.start()
        wait_for_a_run(victim)  # then it sleeps in its first input while the attacker runs
        reached = attacker.grade(TASK, {"reach": REACH, "join": JOIN}[attack])
        thread.join()
        assert [(r.error, r.output) for r in graded["victim"].train + graded["victim"].test] == \
            [("none", [[2, 1]]), ("none", [[6, 5]])]
        assert [(r.error, r.output) for r in reached.train] == [("none", [[0]])], reached.train[0].message
    finally:
        victim.close()
        attacker.close()
