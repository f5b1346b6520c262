"""Which queues a run needs, and which have no live consumer: the pure decisions of `producer/liveness.py`."""

from __future__ import annotations

from arcsynth.common.models import LearnConfig, RunConfig, SamplingConfig
from arcsynth.producer.liveness import (
    OutageTracker,
    missing_queues,
    needed_queues,
    no_consumer_line,
    parse_active_queues,
)

NEEDED = {"inference.smollm2": "inference worker for model smollm2", "execute": "execute worker"}


def _config(**update) -> RunConfig:
    return RunConfig(run_id="r", dataset="d", task_ids=["t"], model="smollm2", sampling=SamplingConfig()).model_copy(
        update=update)


def test_needed_queues_name_each_models_queue_execute_and_finetune_when_learning():
    assert needed_queues(_config()) == NEEDED
    two = needed_queues(_config(models=["smollm2", "Qwen/Qwen2.5-Coder-7B-Instruct"], learn=LearnConfig(epochs=1)))
    assert list(two) == ["inference.smollm2", "inference.Qwen_Qwen2.5-Coder-7B-Instruct", "execute", "finetune"]
    assert two["inference.Qwen_Qwen2.5-Coder-7B-Instruct"] == "inference worker for model Qwen/Qwen2.5-Coder-7B-Instruct"


def test_active_queues_answers_become_worker_to_queue_names():
    replies = {"inference-1@h": [{"name": "inference.smollm2", "exchange": {"name": "x"}}],
               "execute-1@h": [{"name": "execute"}, {"name": "other"}], "idle@h": []}
    assert parse_active_queues(replies) == {"inference-1@h": {"inference.smollm2"}, "execute-1@h": {"execute", "other"},
                                            "idle@h": set()}
    assert parse_active_queues(None) == {}  # nobody answered


def test_missing_queues_are_those_no_answering_worker_consumes():
    assert missing_queues(NEEDED, {}) == NEEDED
    assert missing_queues(NEEDED, {"e@h": {"execute"}, "i@h": {"inference.other"}}) == {
        "inference.smollm2": "inference worker for model smollm2"}
    assert missing_queues(NEEDED, {"a@h": {"execute", "inference.smollm2"}}) == {}
    assert (no_consumer_line("inference.smollm2", NEEDED["inference.smollm2"])
            == "no worker consumes inference.smollm2 (inference worker for model smollm2)")


def test_a_queue_never_consumed_is_said_once_after_the_warning_time_from_the_start_and_again_when_back():
    t = OutageTracker(NEEDED, warn_after_s=60, start=100.0)
    execute_only = {"execute-1@h": {"execute"}}
    assert t.observe(execute_only, 100.0) == []
    assert t.observe(execute_only, 159.0) == []
    [line] = t.observe(execute_only, 160.0)
    assert line.startswith("no worker consumes inference.smollm2 (inference worker for model smollm2) for 60 s")
    assert t.observe(execute_only, 500.0) == []  # once per outage
    back = {**execute_only, "inference-1@h": {"inference.smollm2"}}
    assert t.observe(back, 501.0) == ["inference.smollm2 (inference worker for model smollm2) has a consumer again: "
                                      "inference-1@h"]
    assert t.observe(back, 502.0) == []


def test_a_short_gap_says_nothing_and_a_new_outage_counts_from_its_first_missing_answer():
    t = OutageTracker(NEEDED, warn_after_s=60, start=0.0)
    both = {"a@h": {"execute", "inference.smollm2"}}
    assert t.observe(both, 0.0) == []
    assert t.observe({}, 1000.0) == []  # the worker went quiet only now
    assert t.observe(both, 1030.0) == []  # back within the warning time: nothing to say
    assert t.observe({}, 2000.0) == []
    lines = t.observe({}, 2060.0)
    assert any(line.startswith("no worker consumes execute (execute worker) for 60 s") for line in lines), lines


def test_a_worker_that_stops_answering_is_named_even_when_another_still_consumes_its_queue():
    t = OutageTracker(NEEDED, warn_after_s=10, start=0.0)
    two = {"inference-1@h": {"inference.smollm2"}, "inference-2@h": {"inference.smollm2"}, "execute-1@h": {"execute"}}
    assert t.observe(two, 0.0) == []
    one = {k: v for k, v in two.items() if k != "inference-1@h"}
    assert t.observe(one, 1.0) == []
    assert t.observe(one, 11.0) == ["worker inference-1@h (consumes inference.smollm2) has not answered for 10 s: "
                                    "hung, stopped or gone"]
    assert t.observe(one, 50.0) == []
    assert t.observe(two, 51.0) == ["worker inference-1@h answers again"]


def test_a_queue_whose_only_worker_went_silent_names_that_worker():
    t = OutageTracker(NEEDED, warn_after_s=10, start=0.0)
    assert t.observe({"inference-1@h": {"inference.smollm2"}, "execute-1@h": {"execute"}}, 0.0) == []
    assert t.observe({"execute-1@h": {"execute"}}, 5.0) == []
    lines = t.observe({"execute-1@h": {"execute"}}, 15.0)
    assert lines[0].startswith("worker inference-1@h (consumes inference.smollm2) has not answered for 10 s")
    assert lines[1].startswith("no worker consumes inference.smollm2 (inference worker for model smollm2) for 10 s; "
                               "it was consumed by inference-1@h, which stopped answering")


def test_workers_that_consume_nothing_the_run_needs_are_not_watched():
    t = OutageTracker(NEEDED, warn_after_s=1, start=0.0)
    everything = {"a@h": {"execute", "inference.smollm2"}, "other@h": {"inference.other"}}
    assert t.observe(everything, 0.0) == []
    assert t.observe({"a@h": {"execute", "inference.smollm2"}}, 100.0) == []


def test_an_unanswerable_broadcast_changes_nothing():
    t = OutageTracker(NEEDED, warn_after_s=1, start=0.0)
    assert t.observe(None, 100.0) == []
    assert t.observe({"a@h": {"execute", "inference.smollm2"}}, 101.0) == []
