"""What a restarted producer reads back of a task: its candidates, and how often it was refined."""

from __future__ import annotations

from arcsynth.common.records import JobRecord
from arcsynth.producer.policy import TaskState
from arcsynth.producer.recovery import load_candidates
from tests.support.crafted import SWAP, learning_candidates, write_run


def test_a_refinement_counts_once_per_job_even_with_a_lane_per_model(tmp_path):
    search = [c.model_copy(update={"job": "search-m", "model": "m"}) for c in learning_candidates()[:4]]
    fix = learning_candidates()[4]
    # One refinement job of "nines" with two lanes (models m and n), then a second one on m alone.
    refinements = [fix.model_copy(update={"job": job, "model": model, "index": i})
                   for i, (job, model) in enumerate([("r1-m", "m"), ("r1-n", "n"), ("r1-n", "n"), ("r2-m", "m")])]
    rundir = write_run(tmp_path / "run", [SWAP], {"swap": search + refinements}, finished=[])
    st = TaskState(SWAP, JobRecord(step="search", epoch=0, ids=["s", "e"], models=["m", "n"]))
    jobs = load_candidates(rundir, {"swap": st})
    assert jobs == {"search-m", "r1-m", "r1-n", "r2-m"}
    assert len(st.candidates) == 8
    assert st.refined == [(0, "nines"), (0, "nines")]


def test_a_refinement_sent_and_not_yet_recorded_counts_once(tmp_path):
    rundir = write_run(tmp_path / "run", [SWAP], {"swap": learning_candidates()[:4]}, finished=[])
    job = JobRecord(step="refine", epoch=0, ids=["s1", "e1", "s2", "e2"], models=["m", "n"], parent="nines")
    st = TaskState(SWAP, job)
    load_candidates(rundir, {"swap": st})
    assert st.refined == [(0, "nines")]
