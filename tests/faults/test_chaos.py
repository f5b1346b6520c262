"""Chaos, short form: `benchmarks/chaos.py` on 100 tasks with a few worker kills, one Redis restart
and one producer restart. Every task is scored exactly once, no candidate is recorded twice, the
submission is identical to the undisturbed run's, and nothing it started outlives it.

Each task's slowed program sleeps 300 ms in one of 4 execute slots, so the disturbed run lasts at
least 7.5 s; kills come at most 2.25 s apart (1.5 s, 0.5x to 1.5x), so there are at least 3.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _chaos_module():
    spec = importlib.util.spec_from_file_location("arcsynth_bench_chaos", ROOT / "benchmarks" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_disturbed_run_loses_nothing_and_matches_the_undisturbed_one(tmp_path):
    chaos = _chaos_module()
    report = chaos.run_chaos(tasks=100, seed=7, kill_every=1.5, task_ms=300, max_active=16, work=tmp_path,
                             timeout=300.0, stall_s=60.0)
    summary = report.table() + "\n" + report.last_line()
    assert report.stalled == "", summary
    assert report.events.count("kill") >= 3, summary
    assert report.events.count("redis restart") == 1 and report.producer_restarts == 1, summary
    assert report.chaos.lost == 0 and report.chaos.missing == 0 and report.chaos.twice == 0, summary
    assert report.chaos.statuses == {"done": 100}, summary
    assert report.chaos.duplicate_candidates == 0 and report.chaos.candidates == report.reference.candidates, summary
    assert report.identical, summary
    assert report.orphans == [], summary
    assert report.last_line().endswith(" lost=0 identical=yes"), summary
