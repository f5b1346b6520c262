"""An option that takes one value, given twice, is refused in one line (exit 2) before the command runs;
options that collect (`--model`) may repeat."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from arcsynth.producer.cli import main


@pytest.mark.parametrize(("args", "named"), [
    (["local", "--limit", "1", "--limit", "2", "nowhere"], "--limit"),
    (["local", "--samples=3", "--samples", "4", "nowhere"], "--samples"),
    (["submit", "--prompt", "barc", "--prompt=plain", "nowhere"], "--prompt"),
    (["models", "prepare", "smollm2", "--force", "--force"], "--force"),
    (["worker", "execute", "-c", "1", "--concurrency", "2"], "-c"),
])
def test_an_option_given_twice_is_refused(args, named):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: option {named} is given more than once; give it once"]


def test_options_that_collect_may_repeat():
    """Two `--model`s pass the check (the dataset, which does not exist, is what is refused)."""
    result = CliRunner().invoke(main, ["local", "--model", "smollm2", "--model", "smollm2", "/nonexistent/tasks"])
    assert result.exit_code == 2
    assert "given more than once" not in result.output
    assert "/nonexistent/tasks" in result.output


@pytest.mark.parametrize("args", [
    ["local", "--model", "a\nb", "TASK"],
    ["submit", "--model", "ok", "--model", "x\x1b[2J", "TASK"],
    ["worker", "inference", "--model", "a\nb"],
    ["workers", "inference", "--model", "a\tb"],
])
def test_a_model_name_with_a_control_character_is_refused(args, monkeypatch, tmp_path):
    """It named a queue (`inference.<model>`) and reached the terminal as it was; a worker tried to load it."""
    monkeypatch.setenv("ARCSYNTH_BROKER_URL", "redis://127.0.0.1:1/0")
    (tmp_path / "t.json").write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}))
    result = CliRunner().invoke(main, [str(tmp_path / "t.json") if a == "TASK" else a for a in args])
    assert result.exit_code == 2, result.output
    assert "a model name holds a control character" in result.output
    assert len(result.output.strip().splitlines()) == 1
