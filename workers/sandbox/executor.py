"""Run candidate programs against a task's inputs through the sandbox helper, and grade them.

`Executor` owns one warm helper process (see `helper.py`), started with an empty
environment; it restarts the helper if a run ever takes it down.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from arcsynth.common.augment import Augmentation
from arcsynth.common.lifetime import die_with_parent
from arcsynth.common.models import ExecutionResult, InputResult, Task
from arcsynth.common.scoring import pixel_accuracy

HELPER = Path(__file__).with_name("helper.py")
# Cover state the untrusted code has no business seeing: the project's code and a .env.
_PACKAGES = ("arcsynth.common", "arcsynth.producer", "arcsynth.workers")


class IsolationUnavailable(RuntimeError):
    pass


def paths_to_hide() -> list[str]:
    import importlib.util

    hide = []
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            hide.extend(spec.submodule_search_locations)
    for base in {Path.cwd(), Path(__file__).resolve().parent.parent}:
        for name in (".env", "tests", ".git"):
            if (base / name).exists():
                hide.append(str(base / name))
    return hide


def normalise(code: str) -> str:
    """Whitespace-insensitive identity of a program, for running identical code once."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def fingerprint(results: Sequence[InputResult]) -> str:
    payload = json.dumps([r.output if r.output is not None else r.error for r in results])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Executor:
    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 1024,
                 require: Sequence[str] = (), dsl: Sequence[str] = ()) -> None:
        self.dsl = [str(Path(p).resolve()) for p in dsl]
        for path in self.dsl:
            if not Path(path).is_file():
                raise FileNotFoundError(f"DSL module {path} does not exist")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.require = tuple(require)
        self.layers: dict[str, bool] = {}
        self.last_output = ""  # what the last run printed (captured, capped)
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _helper(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", str(HELPER), json.dumps({"hide": paths_to_hide(), "dsl": self.dsl})],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                # No broker URL, passwords or tokens for untrusted code; one BLAS thread per run.
                env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
                cwd="/",
                text=True,
                preexec_fn=die_with_parent,
            )
            assert self._proc.stdout
            hello = self._proc.stdout.readline()
            self.layers = json.loads(hello)["layers"] if hello else {}
            missing = [name for name in self.require if not self.layers.get(name)]
            if missing:
                self.close()
                raise IsolationUnavailable(
                    f"required isolation layers unavailable here: {', '.join(missing)} "
                    f"(active: {', '.join(k for k, v in self.layers.items() if v) or 'none'})"
                )
        return self._proc

    def start(self) -> dict[str, bool]:
        """Start the helper now; return the isolation layers it could put in place."""
        with self._lock:
            self._helper()
        return dict(self.layers)

    def run(self, code: str, inputs: Sequence[list[list[int]]]) -> tuple[list[InputResult], float]:
        request = json.dumps({"code": code, "inputs": list(inputs), "timeout": self.timeout_s,
                              "memory_mb": self.memory_mb})
        with self._lock:
            for _ in range(2):  # one retry if the helper itself died
                proc = self._helper()
                try:
                    assert proc.stdin and proc.stdout
                    proc.stdin.write(request + "\n")
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                except (BrokenPipeError, OSError):
                    line = ""
                if line:
                    reply = json.loads(line)
                    self.last_output = reply.get("output", "")
                    results = [InputResult(**r) for r in reply["results"]][: len(inputs)]
                    lost = InputResult(error="crashed", message="no result came back for this input")
                    return results + [lost] * (len(inputs) - len(results)), reply["seconds"]
                self.close()
        crashed = InputResult(error="crashed", message="the sandbox helper died")
        return [crashed] * len(inputs), 0.0

    def grade(self, task: Task, code: str, augmentation: Augmentation | None = None) -> ExecutionResult:
        """Run `code` on all train and test inputs; score it against the train outputs.

        With an augmentation, the program was written for the augmented task: it runs on the
        augmented inputs and its outputs are reverted before they are compared.
        """
        start = time.monotonic()
        shown = task if augmentation is None or augmentation.is_identity else augmentation.apply_task(task)
        inputs = [p.input for p in shown.train] + [p.input for p in shown.test]
        results, _ = self.run(code, inputs)
        if shown is not task:
            assert augmentation is not None
            results = [r if r.output is None else r.model_copy(update={"output": augmentation.revert(r.output)})
                       for r in results]
        train, test = results[: len(task.train)], results[len(task.train):]
        correct = sum(1 for r, p in zip(train, task.train) if r.output is not None and r.output == p.output)
        acc = sum(pixel_accuracy(r.output, p.output) for r, p in zip(train, task.train) if p.output)
        return ExecutionResult(
            train=train, test=test, train_correct=correct, train_total=len(task.train),
            train_pixel_accuracy=acc / len(task.train), fingerprint=fingerprint(results),
            seconds=time.monotonic() - start,
        )

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
