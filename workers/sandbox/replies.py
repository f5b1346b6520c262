"""The helper's replies as the project's verdicts: whatever comes back is validated again here.

A malformed verdict is that run's `crashed` verdict; a malformed reply is None (the executor then
gives every input of the run a `crashed` verdict and restarts the helper).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from pydantic import ValidationError

from arcsynth.common.models import InputResult

Run = tuple[list[InputResult], float, str]  # verdicts, seconds, printed output


def fingerprint(results: Sequence[InputResult]) -> str:
    payload = json.dumps([r.output if r.output is not None else r.error for r in results])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _crashed(message: str) -> InputResult:
    return InputResult(error="crashed", message=message)


def _verdict(item: object) -> InputResult:
    """One helper verdict as an InputResult; anything malformed is a `crashed` verdict, never an error."""
    try:
        result = InputResult.model_validate(item)
    except (ValidationError, TypeError, ValueError) as exc:
        return _crashed(f"the sandbox returned an invalid result: {str(exc).splitlines()[0][:200]}")
    if (result.error == "none") != (result.output is not None):
        return _crashed("the sandbox returned an invalid result: output and error disagree")
    message = result.message[:500].encode("utf-8", "replace").decode("utf-8")
    return result if message == result.message else result.model_copy(update={"message": message})


def parse_reply(line: str, count: int) -> Run | None:
    """The helper's reply to one run as `count` verdicts, its seconds and printed output; None if malformed."""
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return run_of(reply, count)


def parse_job_reply(line: str, count: int, codes: int) -> list[Run] | None:
    """The helper's reply to a job of `codes` programs on `count` inputs, one run each; None if malformed."""
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        return None
    runs = reply.get("runs") if isinstance(reply, dict) else None
    if not isinstance(runs, list) or len(runs) != codes:
        return None
    parsed = [run_of(r, count) for r in runs]
    return None if any(p is None for p in parsed) else parsed  # type: ignore[return-value]


def run_of(reply: object, count: int) -> Run | None:
    """One run's reply (already decoded) as `count` verdicts, seconds and output; None if malformed."""
    if not isinstance(reply, dict) or not isinstance(reply.get("results"), list):
        return None
    results = [_verdict(r) for r in reply["results"][:count]]
    results += [_crashed("no result came back for this input")] * (count - len(results))
    seconds = reply.get("seconds")
    output = reply.get("output")
    return (results, float(seconds) if isinstance(seconds, (int, float)) else 0.0,
            output if isinstance(output, str) else "")
