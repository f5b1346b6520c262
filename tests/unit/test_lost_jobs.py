"""Lost job messages: which stages must have a message, and when one found nowhere counts as lost."""

from __future__ import annotations

import json

from celery import Celery

from arcsynth.common.records import JobRecord
from arcsynth.producer.lost_jobs import RUN_JOB, Expected, LostJobWatch, describe, expected, message_id, queue_keys

SEARCH = JobRecord(step="search", ids=["s1", "e1"], sent=True)
TWO_MODELS = JobRecord(step="refine", models=["a/b c", "m2"], ids=["s1", "e1", "s2", "e2"], sent=True)


def test_a_search_expects_its_sample_until_it_succeeded_then_its_execute():
    sample = [Expected("t", 0, "sample", "s1", "inference.m")]
    assert expected("t", SEARCH, {}, "m") == sample  # PENDING: queued, or taken
    assert expected("t", SEARCH, {"s1": "STARTED"}, "m") == sample  # STARTED alone proves nothing
    assert expected("t", SEARCH, {"s1": "SUCCESS"}, "m") == [Expected("t", 0, "execute", "e1", "execute")]
    # A failed or revoked sample fails its chained execute: the lane is over, nothing to look for.
    assert expected("t", SEARCH, {"s1": "FAILURE"}, "m") == []
    assert expected("t", SEARCH, {"s1": "REVOKED"}, "m") == []


def test_a_job_not_marked_sent_or_waiting_for_the_run_expects_nothing():
    assert expected("t", SEARCH.model_copy(update={"sent": False}), {}, "m") == []
    assert expected("t", JobRecord(step="learn", ids=[], sent=True), {}, "m") == []


def test_each_lane_is_looked_for_on_its_own_model_queue():
    got = expected("t", TWO_MODELS, {"s2": "SUCCESS"}, "m")
    assert got == [Expected("t", 0, "sample", "s1", "inference.a_b_c"), Expected("t", 1, "execute", "e2", "execute")]


def test_fine_tunes_of_a_task_and_of_the_run_are_looked_for_on_the_finetune_queue():
    task = JobRecord(step="finetune", models=["m", "m2"], ids=["f1", "f2"], sent=True)
    assert expected("t", task, {}, "m") == [Expected("t", 0, "finetune", "f1", "finetune"),
                                           Expected("t", 1, "finetune", "f2", "finetune")]
    run = JobRecord(step="finetune", ids=["f"], sent=True)
    assert expected(RUN_JOB, run, {"f": "SUCCESS"}, "m") == [Expected(RUN_JOB, 0, "finetune", "f", "finetune")]


SAMPLE = Expected("t", 0, "sample", "s1", "inference.m")
EXECUTE = Expected("u", 0, "execute", "e9", "execute")


def test_a_stage_found_nowhere_on_two_checks_in_a_row_is_lost_and_the_second_check_comes_sooner():
    watch = LostJobWatch(interval_s=30, confirm_s=5)
    assert watch.due(0.0)
    assert watch.observe([SAMPLE, EXECUTE], {"s1": set(), "e9": {"queued"}}, now=0.0) == []
    assert watch.missing == {"s1"} and watch.next_at == 5.0  # confirmed soon
    assert not watch.due(4.9) and watch.due(5.0)
    assert watch.observe([SAMPLE, EXECUTE], {"e9": {"unacked"}}, now=5.0) == [SAMPLE]
    # Re-sent: forgotten, so it must be missed twice more to be re-sent again; next check at the interval.
    assert watch.missing == frozenset() and watch.next_at == 35.0
    assert watch.observe([SAMPLE], {}, now=35.0) == []
    assert watch.observe([SAMPLE], {}, now=40.0) == [SAMPLE]


def test_a_stage_seen_anywhere_in_between_starts_over():
    watch = LostJobWatch(interval_s=30, confirm_s=5)
    for places in ({"queued"}, {"unacked"}, {"leased"}, {"result"}):
        assert watch.observe([SAMPLE], {}, now=0.0) == []
        assert watch.observe([SAMPLE], {"s1": places}, now=5.0) == []  # restored to the queue, taken, ...
        assert watch.missing == frozenset()
    assert watch.observe([SAMPLE], {}, now=10.0) == []  # missed once again: not yet lost


def test_a_stage_no_longer_expected_is_forgotten():
    """A sample missed once whose lane then moved on (its execute is expected now) is not re-sent."""
    watch = LostJobWatch(interval_s=30, confirm_s=5)
    watch.observe([SAMPLE], {}, now=0.0)
    execute = Expected("t", 0, "execute", "e1", "execute")
    assert watch.observe([execute], {"e1": {"queued"}}, now=5.0) == []
    assert watch.missing == frozenset() and watch.next_at == 35.0


def test_a_check_that_could_not_look_keeps_what_was_missing_and_is_tried_again_soon():
    watch = LostJobWatch(interval_s=2, confirm_s=5)
    watch.observe([SAMPLE], {}, now=0.0)
    assert watch.next_at == 2.0  # the interval, when it is shorter than confirm_s
    watch.postpone(2.0)
    assert watch.missing == {"s1"} and watch.next_at == 4.0
    assert watch.observe([SAMPLE], {}, now=4.0) == [SAMPLE]


def test_kombu_messages_and_queues_are_read_as_kombu_writes_them():
    message = {"body": "W10=", "headers": {"id": "abc", "task": "arcsynth.sample"}, "properties": {}}
    assert message_id(json.dumps(message)) == "abc" == message_id(json.dumps(message).encode()) == message_id(message)
    assert message_id("not json") is None and message_id('{"headers": {}}') is None and message_id("[1]") is None
    app = Celery("t")
    assert queue_keys(app, "execute") == ["execute", "execute\x06\x163", "execute\x06\x166", "execute\x06\x169"]
    app.conf.broker_transport_options = {"global_keyprefix": "x:", "priority_steps": [0, 5]}
    assert queue_keys(app, "q") == ["x:q", "x:q\x06\x165"]


def test_the_line_says_what_was_lost_and_that_it_was_sent_again():
    line = describe(Expected("t", 0, "execute", "e1", "execute"))
    assert line.startswith("task t: the execute job e1 (its sample had finished) was found nowhere (queue execute,")
    assert line.endswith("sent again under the same id")
    assert describe(Expected(RUN_JOB, 0, "finetune", "f", "finetune")).startswith("the run's fine-tune: the finetune job f ")
