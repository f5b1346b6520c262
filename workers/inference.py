"""Inference worker: samples candidate programs for a task from the worker's one vLLM engine.

Run with a threads pool (`arcsynth worker inference`): vLLM must not live in a forked prefork
child, and the main thread must stay free for heartbeats while the engine generates.
"""

from __future__ import annotations

import logging
import os
import sys

from arcsynth.common.celery_app import SAMPLE, app
from arcsynth.common.models import ExecutionResult, SampleResult, SamplingConfig, Task
from arcsynth.common.prompts import refinement_messages, task_messages
from arcsynth.common.settings import get_settings
from arcsynth.workers.backends import Backend, PromptTooLong, make_backend
from arcsynth.workers.guard import GuardedTask
from celery import signals

log = logging.getLogger(__name__)
_engine: Backend | None = None


def engine() -> Backend:
    if _engine is None:
        raise RuntimeError("this worker has no engine: start it with `arcsynth worker inference`")
    return _engine


@signals.worker_init.connect
def load_engine(**_: object) -> None:
    """Load the model before the worker reports ready; fail fast and loudly if it cannot."""
    global _engine
    s = get_settings()
    try:
        _engine = make_backend(s)
    except Exception as exc:  # noqa: BLE001 - any load failure ends the worker
        print(f"arcsynth inference worker: cannot load model {s.model!r} ({s.backend}): {exc}",
              file=sys.stderr, flush=True)
        os._exit(3)
    log.info("%s backend ready: %s", s.backend, s.model)


@signals.worker_shutdown.connect
def stop_engine(**_: object) -> None:
    if _engine is not None:
        _engine.shutdown()


@app.task(name=SAMPLE, base=GuardedTask, time_limit=get_settings().inference_time_limit_s)
def sample(task: dict, sampling: dict, adapter: str = "", refine: dict | None = None) -> dict:
    """Sample `sampling.n` completions for one ARC task, optionally through a LoRA adapter.

    With `refine` (`code`, its `execution` and its fingerprint as `parent`), the prompt is the
    follow-up turn that shows that program's per-pair feedback and asks for a corrected one."""
    t = Task.model_validate(task)
    params = SamplingConfig.model_validate(sampling)
    parent = ""
    messages = task_messages(t)
    if refine:
        parent = refine["parent"]
        messages = refinement_messages(t, refine["code"], ExecutionResult.model_validate(refine["execution"]))
    try:
        completions, seconds = engine().generate(messages, params, adapter, task_id=t.id)
    except PromptTooLong as exc:
        return SampleResult(task_id=t.id, skipped=str(exc), adapter=adapter, parent=parent).model_dump()
    except Exception as exc:
        if type(exc).__name__ == "EngineDeadError":
            # A dead engine cannot serve again: end the worker so it is restarted, and leave the
            # job unacknowledged so the broker redelivers it.
            print(f"arcsynth inference worker: vLLM engine died: {exc}", file=sys.stderr, flush=True)
            os._exit(4)
        raise
    completions = [c.model_copy(update={"seconds": round(seconds, 4)}) for c in completions]
    return SampleResult(task_id=t.id, completions=completions, seconds=seconds, adapter=adapter,
                        parent=parent).model_dump()
