"""The replay backend: every form of saved completion is served; a bad file is named, with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arcsynth.common.models import SamplingConfig
from arcsynth.workers.backends.replay import ReplayBackend, ReplayFileError

ASK = [{"role": "user", "content": "solve"}]
REFINE = [*ASK, {"role": "assistant", "content": "x"}, {"role": "user", "content": "again"}]


def write_lines(path: Path, lines: list[object]) -> str:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def test_text_completion_string_and_completion_object_are_all_served(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [
        {"task_id": "t", "text": "A"},
        {"task_id": "t", "completion": "B"},
        {"task_id": "t", "completion": {"text": "C", "completion_tokens": 3}},  # a run's candidates.jsonl
        "",
        {"task_id": "t", "completion": "D", "refine": True},
        {"task_id": "t", "completion": {"text": "E"}, "parent": "abc"},
    ])
    backend = ReplayBackend(path)
    done, _ = backend.generate(ASK, SamplingConfig(n=5), task_id="t")
    assert [c.text for c in done] == ["A", "B", "C"]
    refined, _ = backend.generate(REFINE, SamplingConfig(n=1), task_id="t")
    assert [c.text for c in refined] == ["D"]
    assert backend.generate(ASK, SamplingConfig(n=1), task_id="other")[0] == []


@pytest.mark.parametrize("lines, fragment", [
    (['{"task_id": "t", "text": "A"}', "{not json"], "line 2: Expecting property name"),
    ([{"task_id": "t"}], "line 1: needs text, completion or completion.text (a string); text is NoneType"),
    ([{"task_id": "t", "completion": {"tokens": 3}}], "completion.text is NoneType"),
    ([{"task_id": "t", "completion": 5}], "completion is int"),
    ([{"text": "A"}], "line 1: needs a task_id"),
    ([{"task_id": 7, "text": "A"}], "needs a task_id"),
    ([[1, 2]], "line 1: expected a JSON object"),
    (["[" * 100_000 + "]" * 100_000], "line 1: maximum recursion depth"),
])
def test_a_bad_record_names_the_file_and_line(tmp_path, lines, fragment):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ReplayFileError) as exc:
        ReplayBackend(path)
    message = str(exc.value)
    assert message.startswith(f"replay file {path}: ") and fragment in message and "\n" not in message


def test_a_missing_or_binary_file_is_named(tmp_path):
    with pytest.raises(ReplayFileError, match=r"replay file .*gone.jsonl: cannot read: No such file"):
        ReplayBackend(str(tmp_path / "gone.jsonl"))
    (tmp_path / "bin.jsonl").write_bytes(b'{"task_id": "t", "text": "A"}\n\xff\xfe\n')
    with pytest.raises(ReplayFileError, match=r"bin.jsonl: line 2: not UTF-8"):
        ReplayBackend(str(tmp_path / "bin.jsonl"))
