"""A job message that does not validate (another producer's, an older version's) fails its job with
one short line naming the argument and the field, and never reaches the engine, the sandbox or a
payload file that no reader takes back."""

import math

import pytest
from celery import Celery

from arcsynth.common.jobs import (
    EXECUTE,
    FINETUNE,
    SAMPLE,
    BadJobMessage,
    ExecuteRequest,
    FinetuneRequest,
    SampleRequest,
    SampleResult,
    parse_message,
)
from arcsynth.common.models import Candidate, Completion

TASK = {"id": "t", "train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}
SAMPLE_REQ = {"task": TASK, "sampling": {}, "model": "m"}
BAD_GRID = {"id": "t", "train": [{"input": [[11] * 30] * 30, "output": [["x"] * 30] * 30}] * 50, "test": []}

CASES = {
    "not_an_object": (SampleRequest, "hello", "malformed job: Input should be a valid dictionary"),
    "null": (SampleRequest, None, "malformed job: Input should be a valid dictionary"),
    "45000_bad_cells": (SampleRequest, {**SAMPLE_REQ, "task": BAD_GRID},
                        "field task.train[0].input: colour 11 at row 0, column 0 is outside 0..9 (and 45050 more errors)"),
    "negative_n": (SampleRequest, {**SAMPLE_REQ, "sampling": {"n": -1}}, "field sampling.n: Input should be greater"),
    "nan_temperature": (SampleRequest, {**SAMPLE_REQ, "sampling": {"temperature": math.nan}},
                        "field sampling.temperature: Input should be a finite number"),
    "refine_feedback_for_other_pairs": (
        SampleRequest, {**SAMPLE_REQ, "refine": {"code": "x", "parent": "p", "execution": {"train": [], "test": []}}},
        "refine.execution.train has 0 results for the task's 1 train pairs"),
    "nan_seconds": (SampleResult, {"task_id": "t", "completions": [{"text": "x", "seconds": math.nan}]},
                    "field completions[0].seconds: Input should be a finite number"),
    "infinite_seconds": (SampleResult, {"task_id": "t", "seconds": math.inf}, "field seconds: Input should be a finite"),
    "negative_tokens": (SampleResult, {"task_id": "t", "completions": [{"text": "x", "completion_tokens": -3}]},
                        "field completions[0].completion_tokens: Input should be greater than or equal to 0"),
    "more_completions_than_a_request_samples": (SampleResult, {"task_id": "t", "completions": [{"text": "x"}] * 5000},
                                                "field completions: List should have at most 4096 items"),
    "negative_epoch": (ExecuteRequest, {"task": TASK, "epoch": -1}, "field epoch: Input should be greater"),
    "colour_map_moving_0": (ExecuteRequest, {"task": TASK, "augmentation": {"colours": [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]}},
                            "field augmentation.colours: colours must permute 0..9"),
    "a_5000_digit_colour": (ExecuteRequest, {"task": {**TASK, "train": [{"input": [[10**5000]], "output": [[1]]}]}},
                            "field task.train[0].input: "),
    "negative_source_count": (FinetuneRequest, {"base_model": "m", "examples": [{"completion": "x"}], "sources": {"t": -4}},
                              "field sources.t: Input should be greater than or equal to 0"),
    "no_examples": (FinetuneRequest, {"base_model": "m", "examples": []}, "field examples: List should have at least 1"),
    "a_100000_character_key": (FinetuneRequest, {"base_model": "m", "examples": [{"completion": "x"}],
                                                 "sources": {"k" * 100_000: "z"}}, "(100000 characters): Input should be"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_malformed_message_is_one_short_line(name):
    model, payload, fragment = CASES[name]
    with pytest.raises(BadJobMessage) as err:
        parse_message(model, payload, "job")
    text = str(err.value)
    assert text.startswith("malformed job: ") and fragment in text, text
    assert "\n" not in text and len(text) < 500, text[:1000]


def test_the_reason_survives_the_json_result_backend():
    """Celery's JSON result backend keeps an exception's args: pydantic's ValidationError has none,
    so the producer read `ValidationError(())`; a `BadJobMessage` comes back whole."""
    backend = Celery(broker="memory://", backend="cache+memory://").backend
    with pytest.raises(BadJobMessage) as err:
        parse_message(SampleRequest, {**SAMPLE_REQ, "sampling": {"n": 0}}, "sample request")
    back = backend.exception_to_python(backend.prepare_exception(err.value))
    assert isinstance(back, BadJobMessage) and str(back) == str(err.value)


def test_a_nan_seconds_would_have_written_a_candidate_no_reader_takes_back():
    """Why `Completion.seconds` is finite: NaN is written as null in JSON, which `Candidate` refuses."""
    line = Completion.model_construct(text="x", prompt_tokens=0, completion_tokens=0, finish_reason=None,
                                      seconds=math.nan).model_dump_json()
    assert '"seconds":null' in line
    with pytest.raises(ValueError):
        Candidate.model_validate_json(f'{{"task_id": "t", "index": 0, "code": null, "completion": {line}}}')


def test_each_worker_fails_a_malformed_job_before_touching_its_engine_or_sandbox():
    """The three job functions, called as a worker calls them (no engine loaded, no sandbox started)."""
    from arcsynth.common.settings import Settings
    from arcsynth.workers import execute, finetune, inference

    app = Celery(broker="memory://", backend="cache+memory://")
    settings = Settings(_env_file=None)
    for worker in (inference, execute, finetune):
        worker.register(app, settings)
    bad_result = {"task_id": "t", "completions": [{"text": "x", "seconds": math.nan}]}
    for name, args, fragment in [
        (SAMPLE, ({"task": 5, "sampling": {}, "model": "m"},), "malformed sample request: field task: "),
        (EXECUTE, (bad_result, {"task": TASK}), "malformed sample result: field completions[0].seconds"),
        (EXECUTE, ({"task_id": "t"}, {"task": TASK, "epoch": "x"}), "malformed execute request: field epoch"),
        (FINETUNE, ({"base_model": "m", "examples": []},), "malformed fine-tune request: field examples"),
    ]:
        with pytest.raises(BadJobMessage, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            app.tasks[name](*args)
