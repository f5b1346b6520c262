"""The one Celery app: three queues, routed by task name, tuned for long jobs that must not be lost.

Built from the process's settings (`make_app(settings)`); the producer only sends and reads jobs
on it, and a worker registers its kind's tasks on it (`register` in `arcsynth.workers.<kind>`)."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from arcsynth.common.jobs import QUEUES, ROUTES
from arcsynth.common.settings import Settings


def make_app(s: Settings) -> Celery:
    """The app for `s`'s broker; with no broker configured, an unconfigured app (nothing to send)."""
    app = Celery("arcsynth")
    if s.broker_url is None:
        return app  # configured later (a CLI that only validates files needs no broker)
    app.conf.update(
        broker_url=s.broker(),
        result_backend=s.result_backend_url(),
        result_expires=s.result_expires_s,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(q) for q in QUEUES],
        task_routes=ROUTES,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A job is redelivered only after this; it must outlast the longest job's hard limit.
        broker_transport_options={"visibility_timeout": s.visibility_s(),
                                  "unacked_restore_interval": s.redelivery_check_s, "unacked_restore_throttle": 1},
        result_backend_transport_options={"visibility_timeout": s.visibility_s()},
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        # Ride out a Redis restart: results and publishes retry instead of failing the run.
        result_backend_always_retry=True,
        result_backend_max_retries=150,
        result_backend_base_sleep_between_retries_ms=100,
        result_backend_max_sleep_between_retries_ms=2000,
        task_publish_retry_policy={"max_retries": 150, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 2},
        worker_hijack_root_logger=False,
        # Read by the job guard (workers/guard.py) in each job.
        arcsynth_job_lease_s=s.job_lease_s,
        arcsynth_max_job_attempts=s.max_job_attempts,
        # Read by the producer: how often it looks for lost job messages (producer/lost_jobs.py).
        arcsynth_lost_job_check_s=s.lost_job_check_s,
    )
    return app
