"""Inference worker: samples candidate programs for a task from the worker's one engine.

Run with a threads pool (`arcsynth worker inference`): vLLM must not live in a forked prefork
child, and the main thread must stay free for heartbeats while the engine generates.
"""

from __future__ import annotations

import logging
import os
import sys

from celery import Celery, signals

from arcsynth.common import formats
from arcsynth.common.jobs import SAMPLE, SampleRequest, SampleResult, parse_message
from arcsynth.common.settings import Settings
from arcsynth.workers.backends import Backend, PromptTooLong, make_backend
from arcsynth.workers.backends.base import Prompt
from arcsynth.workers.guard import GuardedTask

log = logging.getLogger(__name__)
_engine: Backend | None = None


def engine() -> Backend:
    if _engine is None:
        raise RuntimeError("this worker has no engine: start it with `arcsynth worker inference`")
    return _engine


def sample(request: SampleRequest) -> SampleResult:
    """Sample `sampling.n` completions for one ARC task, optionally through a LoRA adapter.

    The prompt is in the request's format (`common/formats.py`). With `refine`, it is the
    follow-up turn that shows that program's per-pair feedback and asks for a corrected one;
    every completion records the program's fingerprint as parent."""
    t, refine, adapter, fmt = request.task, request.refine, request.adapter, request.prompt_format
    parent = refine.parent if refine else ""
    if refine:
        prompt: Prompt = formats.refinement_messages(fmt, t, refine.code, refine.execution)
    else:
        prompt = formats.prompt_text(fmt, t) or formats.messages(fmt, t)
    try:
        completions, seconds = engine().generate(prompt, request.sampling, adapter, task_id=t.id)
    except PromptTooLong as exc:
        return SampleResult(task_id=t.id, skipped=str(exc), adapter=adapter, parent=parent)
    except Exception as exc:
        if type(exc).__name__ == "EngineDeadError":
            # A dead engine cannot serve again: end the worker so it is restarted, and leave the
            # job unacknowledged so the broker redelivers it.
            print(f"arcsynth inference worker: vLLM engine died: {exc}", file=sys.stderr, flush=True)
            os._exit(4)
        raise
    completions = [c.model_copy(update={"seconds": round(seconds, 4)}) for c in completions]
    return SampleResult(task_id=t.id, completions=completions, seconds=seconds, adapter=adapter, parent=parent)


def register(app: Celery, settings: Settings) -> None:
    """Add the sample job to `app`; the engine loads before the worker reports ready."""

    @signals.worker_init.connect(weak=False)
    def load_engine(**_: object) -> None:
        global _engine
        try:
            _engine = make_backend(settings)
        except Exception as exc:  # noqa: BLE001 - any load failure ends the worker
            what = (f"cannot load the replay file {settings.replay_file!r}" if settings.backend == "replay"
                    else f"cannot load model {settings.model!r} ({settings.backend})")
            print(f"arcsynth inference worker: {what}: {exc}", file=sys.stderr, flush=True)
            os._exit(3)
        log.info("%s backend ready: %s", settings.backend, settings.model)

    @signals.worker_shutdown.connect(weak=False)
    def stop_engine(**_: object) -> None:
        if _engine is not None:
            _engine.shutdown()

    @app.task(name=SAMPLE, base=GuardedTask, time_limit=settings.inference_time_limit_s)
    def sample_job(request: dict) -> dict:
        req = parse_message(SampleRequest, request, "sample request")  # a bad message fails its job in one line
        if req.model != settings.model:  # routed by model (`inference_queue`): only a misconfigured sender gets here
            raise ValueError(f"this worker serves model {settings.model!r}, the job asks for {req.model!r}")
        return sample(req).model_dump(mode="json")
