"""`export`: relabelled examples and refinement pairs as chat conversations, as JSONL and as a `datasets` folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from arcsynth.common.models import Pair, Task
from arcsynth.common.prompts import format_completion, refinement_messages, task_messages
from arcsynth.producer.export import ExportError, export_run
from arcsynth.producer.lab_cli import export
from tests.support.crafted import MIRROR, NINES, SWAP, learning_candidates, write_run


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run", [SWAP], {"swap": learning_candidates()}, model="smollm2").path


def test_jsonl_holds_relabelled_examples_and_refinement_pairs(run, tmp_path):
    result = export_run(run, tmp_path / "out")
    assert (result.relabelled, result.refinements, result.format) == (2, 1, "jsonl")
    records = [json.loads(line) for line in (tmp_path / "out" / "examples.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["task_id"], r["epoch"], r["model"], r["train_accuracy"], r["parent_train_accuracy"])
            for r in records] == [("relabelled", "swap", 0, "smollm2", 1.0, None),
                                  ("relabelled", "swap", 0, "smollm2", 0.0, None),
                                  ("refinement", "swap", 0, "smollm2", 1.0, 0.0)]
    mirror, nines, fix = records
    assert mirror["prompt"] == task_messages(SWAP.model_copy(update={"test": [Pair(input=[[5, 6]])]}))
    assert mirror["completion"] == [{"role": "assistant", "content": format_completion(MIRROR)}]
    relabelled = Task(id="x", train=[{"input": [[1, 2]], "output": [[9]]}, {"input": [[3, 4]], "output": [[9]]}],
                      test=[{"input": [[5, 6]]}])
    assert nines["prompt"] == task_messages(relabelled)
    parent = learning_candidates()[1]
    assert fix["prompt"] == refinement_messages(SWAP, NINES, parent.execution)
    assert fix["completion"] == [{"role": "assistant", "content": format_completion(MIRROR)}]


def test_hf_folder_loads_back_with_its_schema(run, tmp_path):
    from datasets import load_from_disk

    result = CliRunner().invoke(export, [str(run), "--out", str(tmp_path / "hf"), "--format", "hf"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"2 relabelled examples and 1 refinement pairs in {tmp_path / 'hf'}"
    ds = load_from_disk(str(tmp_path / "hf"))
    assert ds.num_rows == 3 and ds["kind"] == ["relabelled", "relabelled", "refinement"]
    assert ds[2]["parent_train_accuracy"] == 0.0 and ds[0]["parent_train_accuracy"] is None
    assert ds[2]["completion"] == [{"role": "assistant", "content": format_completion(MIRROR)}]
    assert ds[2]["prompt"][-1]["role"] == "user" and "Example 1: wrong" in ds[2]["prompt"][-1]["content"]

    empty = write_run(tmp_path / "empty", [SWAP], {"swap": learning_candidates()[:1]}, run_id="empty").path
    assert export_run(empty, tmp_path / "hf-empty", "hf").relabelled == 0
    assert load_from_disk(str(tmp_path / "hf-empty")).column_names[:2] == ["kind", "task_id"]


def test_bad_input_is_one_line(run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ExportError, match="option --out: .* exists and is not empty"):
        export_run(run, tmp_path / "full")
    with pytest.raises(ExportError, match="option --format: 'csv'"):
        export_run(run, tmp_path / "new", "csv")
    result = CliRunner().invoke(export, [str(tmp_path / "full"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'full' / 'run.json'}: missing (not a run directory)"
    assert not (tmp_path / "o").exists()


def _records(out):
    return [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]


def test_a_run_exports_in_its_own_prompt_format(tmp_path):
    """Review: a `barc` run's examples came out in arcsynth's prompt, a `base` run's as chat its model cannot
    read. A `base` run's are plain text (TRL's prompt-completion form), with no refinement pairs."""
    from arcsynth.common import formats

    barc = write_run(tmp_path / "barc", [SWAP], {"swap": learning_candidates()}, prompt_format="barc").path
    export_run(barc, tmp_path / "out")
    mirror, _, fix = _records(tmp_path / "out")
    shown = SWAP.model_copy(update={"test": [Pair(input=[[5, 6]])]})
    assert mirror["prompt"] == formats.messages("barc", shown)  # as the run's fine-tunes train: BARC's prompt
    assert mirror["completion"] == [{"role": "assistant", "content": formats.completion_text("barc", MIRROR)}]
    assert fix["prompt"] == formats.refinement_messages("barc", SWAP, NINES, learning_candidates()[1].execution)
    assert fix["completion"] == [{"role": "assistant", "content": formats.completion_text("barc", MIRROR)}]

    base = write_run(tmp_path / "base", [SWAP], {"swap": learning_candidates()}, prompt_format="base").path
    export_run(base, tmp_path / "plain")
    records = _records(tmp_path / "plain")
    assert [r["kind"] for r in records] == ["relabelled", "relabelled"]
    assert records[0]["prompt"] == formats.prompt_text("base", shown)
    assert records[0]["completion"] == formats.completion_text("base", MIRROR)
    pytest.importorskip("datasets")
    from datasets import load_from_disk

    export_run(base, tmp_path / "hf", "hf")
    assert load_from_disk(str(tmp_path / "hf"))[0]["prompt"] == records[0]["prompt"]


def test_refinement_pairs_show_the_parent_the_model_saw_and_never_a_hardcoded_answer(tmp_path):
    from tests.support.crafted import candidate

    t = Task(id="swap", train=[{"input": [[1, 2], [3, 4]], "output": [[2, 1], [4, 3]]}], test=[{"input": [[5, 6]]}])
    hardcoded = "def transform(grid):\n    return [[2, 1], [4, 3]]"
    first_nines = candidate(t, 0, [[[9]]], [[[9]]], code=NINES, fingerprint="nines")  # epoch 0: shown when refined
    cands = [first_nines,
             candidate(t, 0, [[[9]]], [[[9]]], code=NINES + "  # again", epoch=1, fingerprint="nines"),
             candidate(t, 0, [[[2, 1], [4, 3]]], [[[9]]], code=hardcoded, epoch=1, parent="nines", fingerprint="hc"),
             candidate(t, 1, [[[2, 1], [4, 3]]], [[[6, 5]]], code=MIRROR, epoch=1, parent="nines", fingerprint="m")]
    run = write_run(tmp_path / "run", [t], {"swap": cands}).path
    export_run(run, tmp_path / "out")
    refinements = [r for r in _records(tmp_path / "out") if r["kind"] == "refinement"]
    assert [r["completion"][0]["content"] for r in refinements] == [format_completion(MIRROR)]
    assert refinements[0]["prompt"] == refinement_messages(t, NINES, first_nines.execution)


def test_jsonl_is_written_when_the_temporary_folder_is_on_another_filesystem(run, tmp_path, monkeypatch):
    import errno
    import os
    import tempfile

    other = tmp_path / "other-fs"
    other.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(other))

    def across(real):
        def move(src, dst, *a, **kw):
            if (other in Path(src).parents) != (other in Path(dst).parents):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return real(src, dst, *a, **kw)
        return move

    monkeypatch.setattr(os, "replace", across(os.replace))
    monkeypatch.setattr(os, "rename", across(os.rename))
    result = export_run(run, tmp_path / "out")
    assert (result.relabelled, result.refinements) == (2, 1)
    assert len(_records(tmp_path / "out")) == 3 and os.listdir(tmp_path / "out") == ["examples.jsonl"]


def test_a_datasets_folder_that_fails_half_way_leaves_out_empty(run, tmp_path, monkeypatch):
    """Review: `--format hf` saved straight into --out; a failure left half a dataset there."""
    datasets = pytest.importorskip("datasets")

    def fail_half_way(self, path, *a, **kw):
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", fail_half_way)
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError, match="option --out: cannot write a datasets folder in .*: No space left on device"):
        export_run(run, tmp_path / "out", "hf")
    assert list((tmp_path / "out").iterdir()) == []
