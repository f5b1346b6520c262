"""The supervisor that `arcsynth local` and `arcsynth workers` keep their workers under, on tiny
Python processes: restarts with backoff, gives up in one line, stops what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from arcsynth.common.lifetime import die_with_parent
from arcsynth.common.supervise import Supervisor, describe_exit
from tests.support import wait_until

# Serves until SIGTERM, then exits 0 (as a Celery worker's warm shutdown does).
SERVE = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
         "print('serving', flush=True)\nwhile True:\n    time.sleep(1)\n")
DIE = "import sys\nprint('arcsynth inference worker: vLLM engine died: boom', flush=True)\nsys.exit(4)\n"


def starter(code: str, log: Path | None):
    """Start `code` with its output in `log` (or a pipe), dying with the thread that started it."""
    def start() -> subprocess.Popen[bytes]:
        if log is None:
            return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)
    return start


def quiet(lines: list[str]):
    return lines.append


def test_a_process_that_keeps_exiting_is_given_up_on_in_one_line(tmp_path):
    given_up: list[str] = []
    notes: list[str] = []
    sup = Supervisor(max_restarts=2, window_s=60, backoff_s=0.05, poll_s=0.02, on_give_up=given_up.append,
                     say=quiet(notes))
    log = tmp_path / "inference.log"
    started = time.monotonic()
    try:
        sup.add("inference-1@here", starter(DIE, log), log)
        sup.watch()
        line = sup.wait(timeout=60)
    finally:
        sup.stop(grace_s=5)
    assert line is not None and given_up == [line] and "\n" not in line
    assert line.startswith("worker inference-1@here exited 3 times in 60 s, last with exit code 4; not restarting it")
    assert line.endswith("its log ends: arcsynth inference worker: vLLM engine died: boom")
    assert sup.children["inference-1@here"].restarts == 2 and len(notes) == 2
    assert "restarting it in 0.05 s (1 of 2" in notes[0] and "restarting it in 0.1 s (2 of 2" in notes[1]
    assert log.read_text().count("--- arcsynth supervisor: restart") == 2
    assert time.monotonic() - started < 30


def test_a_killed_process_is_restarted_and_stopped_gracefully_at_the_end(tmp_path):
    exits: list[tuple[str, int]] = []
    sup = Supervisor(backoff_s=0.05, poll_s=0.02, on_exit=lambda name, code: exits.append((name, code)), say=quiet([]))
    log = tmp_path / "execute.log"
    try:
        first = sup.add("execute-1@here", starter(SERVE, log), log)
        sup.watch()
        wait_until(lambda: "serving" in log.read_text(), 30, "the process to serve")
        os.kill(first.pid, signal.SIGKILL)
        wait_until(lambda: sup.procs["execute-1@here"].pid != first.pid, 30, "a restart")
        second = sup.procs["execute-1@here"]
        wait_until(lambda: log.read_text().count("serving") == 2, 30, "the restarted process to serve")
        # Restarted by the supervisor's thread, it outlives any other thread's end and is not reaped early.
        assert psutil.Process(second.pid).status() != psutil.STATUS_ZOMBIE
    finally:
        sup.stop(grace_s=10)
    assert exits == [("execute-1@here", -9)]
    assert second.returncode == 0  # SIGTERM: a warm shutdown, not a kill
    assert sup.failure is None


def test_output_through_a_pipe_is_copied_and_its_tail_named(capfd):
    sup = Supervisor(max_restarts=0, backoff_s=0.05, poll_s=0.02, say=quiet([]))
    try:
        sup.add("finetune-1@here", starter(DIE, None))
        sup.watch()
        line = sup.wait(timeout=30)
    finally:
        sup.stop(grace_s=5)
    assert line is not None and line.endswith("its log ends: arcsynth inference worker: vLLM engine died: boom")
    wait_until(lambda: "vLLM engine died" in capfd.readouterr().out, 10, "the copied output")


def test_stop_during_a_backoff_restarts_nothing(tmp_path):
    sup = Supervisor(backoff_s=30, poll_s=0.02, say=quiet([]))
    log = tmp_path / "w.log"
    sup.add("w", starter(DIE, log), log)
    sup.watch()
    wait_until(lambda: sup.children["w"].restart_at is not None, 30, "the first exit")
    started = time.monotonic()
    sup.stop(grace_s=5)
    assert time.monotonic() - started < 5 and sup.children["w"].restarts == 0


def test_exit_descriptions():
    assert describe_exit(4) == "exit code 4"
    assert describe_exit(-9) == "killed by SIGKILL (exit code -9)"
