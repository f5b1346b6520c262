"""`report` and `results` on a run directory a live producer writes, and the report's summary numbers (no browser)."""

from __future__ import annotations

from click.testing import CliRunner

from arcsynth.producer.report import write_report
from arcsynth.producer.summary import summarise
from tests.support.crafted import A, B, C, candidate, crafted, write_run


def test_report_and_results_leave_a_torn_last_line_to_the_producer_writing_it(tmp_path, monkeypatch):
    """They cut it off, and the rest of the producer's line then landed after the cut: a line in the
    middle of candidates.jsonl that no reader takes, the run unreadable for good."""
    from arcsynth.producer.manage_cli import results

    monkeypatch.delenv("ARCSYNTH_BROKER_URL", raising=False)
    rundir = write_run(tmp_path / "run", [A, B, C], crafted(), finished=["b"])
    line = (candidate(A, 9, [[[2]]], [[[4]]]).model_dump_json() + "\n").encode()
    with open(rundir.candidates_file, "ab", buffering=0) as producer:
        producer.write(line[:30])  # the producer, mid-way through appending a line
        before = rundir.candidates_file.read_bytes()
        write_report(rundir)
        result = CliRunner().invoke(results, [str(rundir.path)])
        assert result.exit_code == 0, result.output
        assert rundir.candidates_file.read_bytes() == before  # read, never cut
        producer.write(line[30:])
    assert summarise(rundir.path).samples == 8  # the 7 before, and the one it finished writing


def test_sampling_time_counts_each_request_once_per_model_and_per_job(tmp_path):
    """Two models' requests for a task, or two refinement rounds of one program, are requests of their own."""
    a = [candidate(A, 0, [[[2]]], [[[4]]], seconds=10.0).model_copy(update={"model": "m1", "job": "j1"}),
         candidate(A, 1, [[[2]]], [[[4]]], seconds=10.0).model_copy(update={"model": "m1", "job": "j1"}),
         candidate(A, 0, [[[2]]], [[[4]]], seconds=7.0).model_copy(update={"model": "m2", "job": "j2"}),
         candidate(A, 0, [[[0]]], [[[4]]], seconds=3.0, parent="p").model_copy(update={"model": "m1", "job": "j3"}),
         candidate(A, 0, [[[0]]], [[[4]]], seconds=2.0, parent="p").model_copy(update={"model": "m1", "job": "j4"})]
    rundir = write_run(tmp_path / "run", [A], {"a": a}, model="m1", models=["m1", "m2"])
    times = summarise(rundir.path).times
    assert times.sample_s == 10.0 + 7.0 + 3.0 + 2.0
    assert times.execute_s == 10.0 + 7.0 + 3.0 + 2.0  # each job runs its one distinct program once


def test_a_run_without_candidates_jsonl_is_a_run_with_no_candidates(tmp_path):
    """Every reader but `read_candidates` took a missing file for an empty one; it raised FileNotFoundError."""
    from arcsynth.producer.export import export_run

    rundir = write_run(tmp_path / "run", [A, B], {}, finished=[])
    rundir.candidates_file.unlink()
    assert summarise(rundir.path).samples == 0
    assert write_report(rundir).exists()
    assert export_run(rundir.path, tmp_path / "out").relabelled == 0
    assert not rundir.candidates_file.exists()  # read, not made
