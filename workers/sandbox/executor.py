"""Run candidate programs against a task's inputs through the sandbox helper, and grade them.

`Executor` owns one warm helper process (see `helper.py`), started with an empty
environment; it restarts the helper if a run ever takes it down. Whatever comes back from the
helper is validated again here: a malformed verdict is that run's `crashed` verdict.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

from arcsynth.common.augment import Augmentation
from arcsynth.common.lifetime import die_with_parent
from arcsynth.common.models import ExecutionResult, InputResult, Task
from arcsynth.common.scoring import pixel_accuracy
from arcsynth.workers.sandbox.replies import Run, _crashed, fingerprint, parse_job_reply, parse_reply  # noqa: F401

HELPER = Path(__file__).with_name("helper.py")
# Cover state the untrusted code has no business seeing (in the fallback view, where the OS refuses
# the minimal root): the project's code and a .env.
_PACKAGES = ("arcsynth.common", "arcsynth.producer", "arcsynth.workers")
_T = TypeVar("_T")
_HELPER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


ISOLATION = ("run", "job")


class IsolationUnavailable(RuntimeError):
    """The sandbox cannot give runs what this worker requires; its message is one line."""


class SandboxStartError(IsolationUnavailable):
    """The sandbox helper did not start (it died, hung or reported a failure before it was ready)."""


class DslImportError(SandboxStartError):
    """A DSL module is missing or failed to import; the message names the module and its error."""

    def __init__(self, module: str, message: str) -> None:
        super().__init__(f"DSL module {module} failed to import: {message}")
        self.module = module


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


class Executor:
    """Runs programs in one warm sandbox helper (see `helper.py`) and grades them.

    `dsl`: DSL module files programs may import by file name; they load in the listed order, so a
    later one may import an earlier one, never the reverse. `packages`: top-level packages programs
    may import beside the standard library and numpy. `require`: isolation layers without which
    `start()` raises `IsolationUnavailable`. `minimal_root=False` gives runs the wider fallback view
    (the host's tree, its writable places replaced and the project covered) even where the minimal
    root could be built. `python`: the interpreter the helper runs on. `start()` raises a
    `SandboxStartError` (one line) when the helper cannot start, a `DslImportError` when a DSL module
    is missing or fails to import.
    `isolation`: "run" (every program in its own forked, confined process) or "job" (`run_many` and
    `grade_many` run the programs of one call in turn in one confined process, each in fresh globals
    on fresh copies of the grids with its own time limit; a process in which a program changed
    shared state, timed out or crashed is replaced before the next program; see `sandbox_job`).
    Verdicts are the same in both modes. `run()`, `grade()`, `run_many()` and `grade_many()` never
    raise for anything a program does: it is that program's verdict.
    """

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 1024, require: Sequence[str] = (),
                 dsl: Sequence[str] = (), packages: Sequence[str] = (), start_timeout_s: float = 120.0,
                 python: str = sys.executable, minimal_root: bool = True, isolation: str = "run") -> None:
        if isolation not in ISOLATION:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATION)}, not {isolation!r}")
        self.isolation = isolation
        self.dsl = [str(Path(p).resolve()) for p in dsl]
        self.packages = list(packages)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.require = tuple(require)
        self.start_timeout_s = start_timeout_s
        self.python = python
        self.minimal_root = minimal_root
        self.layers: dict[str, bool] = {}
        self.why: dict[str, str] = {}  # why each unavailable layer is unavailable
        self.last_output = ""  # what the last run printed (captured, capped)
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()

    def _fail(self, reason: str) -> SandboxStartError:
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(max(0, self._stderr.seek(0, 2) - 4096))
            lines = [x for x in self._stderr.read().decode("utf-8", "replace").splitlines() if x.strip()]
            tail = f"; its last words: {lines[-1].strip()[:300]}" if lines else ""
        self.close()
        return SandboxStartError(f"the sandbox helper {reason}{tail}")

    def _hello(self, proc: subprocess.Popen[str]) -> dict:
        assert proc.stdout
        ready, _, _ = select.select([proc.stdout], [], [], self.start_timeout_s)
        if not ready:
            raise self._fail(f"did not start within {self.start_timeout_s:g} s (does a DSL module hang at import?)")
        line = proc.stdout.readline()
        if not line:
            raise self._fail(f"exited with status {proc.wait()} before it was ready")
        try:
            hello = json.loads(line)
            assert isinstance(hello, dict)
        except (ValueError, AssertionError):
            raise self._fail(f"said something unexpected: {line.strip()[:100]!r}") from None
        if hello.get("error") == "dsl":
            self.close()
            raise DslImportError(str(hello.get("module")), str(hello.get("message")))
        if "error" in hello or not isinstance(hello.get("layers"), dict):
            raise self._fail(f"failed to start: {hello.get('message', line.strip()[:200])}")
        return hello

    def _helper(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            missing = [p for p in self.dsl if not Path(p).is_file()]
            if missing:
                raise DslImportError(missing[0], "the file does not exist")
            config = {"hide": paths_to_hide(), "dsl": self.dsl, "packages": self.packages,
                      "minimal_root": self.minimal_root}
            self._stderr = tempfile.TemporaryFile()
            try:
                self._proc = subprocess.Popen(
                    [self.python, "-I", str(HELPER), json.dumps(config)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                    # No broker URL, passwords or tokens for untrusted code; one BLAS thread per run.
                    env=_HELPER_ENV, cwd="/", text=True, preexec_fn=die_with_parent,
                )
            except OSError as exc:
                raise self._fail(f"could not be started with {self.python}: {exc.strerror or exc}") from None
            hello = self._hello(self._proc)
            self.layers = {str(k): bool(v) for k, v in hello["layers"].items()}
            why = hello.get("why")
            self.why = {str(k): str(v) for k, v in why.items()} if isinstance(why, dict) else {}
            missing = [name for name in self.require if not self.layers.get(name)]
            if missing:
                self.close()
                details = [f"active: {', '.join(k for k, v in self.layers.items() if v) or 'none'}"]
                details += [f"{k}: {self.why[k]}" for k in missing if k in self.why]
                raise IsolationUnavailable(
                    f"required isolation layers unavailable here: {', '.join(missing)} ({'; '.join(details)})"
                )
        return self._proc

    def start(self) -> dict[str, bool]:
        """Start the helper now; return the isolation layers it could put in place."""
        with self._lock:
            self._helper()
        return dict(self.layers)

    def _ask(self, request: dict, parse: Callable[[str], _T | None], broken: Callable[[str], _T]) -> _T:
        """Send one request, parse the reply line; `broken(why)` when the helper died or replied nonsense."""
        line_out = json.dumps(request) + "\n"
        with self._lock:
            for _ in range(2):  # one retry if the helper itself died
                proc = self._helper()
                try:
                    assert proc.stdin and proc.stdout
                    proc.stdin.write(line_out)
                    proc.stdin.flush()
                    line = proc.stdout.readline()
                except (BrokenPipeError, OSError):
                    line = ""
                if line:
                    parsed = parse(line)
                    if parsed is None:
                        self.close()
                        return broken("the sandbox helper sent a malformed reply")
                    return parsed
                self.close()
        return broken("the sandbox helper died")

    def run(self, code: str, inputs: Sequence[list[list[int]]]) -> tuple[list[InputResult], float]:
        """One verdict per input and the run's seconds. Raises only when the helper cannot (re)start."""
        if self.isolation == "job":
            results, seconds, self.last_output = self.run_many([code], inputs)[0]
            return results, seconds
        request = {"code": code, "inputs": list(inputs), "timeout": self.timeout_s, "memory_mb": self.memory_mb}
        count = len(inputs)
        results, seconds, self.last_output = self._ask(
            request, lambda line: parse_reply(line, count), lambda why: ([_crashed(why)] * count, 0.0, ""))
        return results, seconds

    def run_many(self, codes: Sequence[str], inputs: Sequence[list[list[int]]]) -> list[Run]:
        """(verdicts, seconds, printed output) of each code on `inputs`, in order, as `run` gives them.

        In "job" isolation the codes share job processes (see the class docstring); in "run"
        isolation each is its own run. Raises only when the helper cannot (re)start.
        """
        if self.isolation == "run" or not codes:
            out = []
            for code in codes:
                results, seconds = self.run(code, inputs)
                out.append((results, seconds, self.last_output))
            return out
        request = {"codes": list(codes), "inputs": list(inputs), "timeout": self.timeout_s,
                   "memory_mb": self.memory_mb}
        count = len(inputs)

        runs = self._ask(request, lambda line: parse_job_reply(line, count, len(codes)),
                         lambda why: [([_crashed(why)] * count, 0.0, "")] * len(codes))
        if runs:
            self.last_output = runs[-1][2]
        return runs

    def _inputs(self, task: Task, augmentation: Augmentation | None) -> tuple[Task, list[list[list[int]]]]:
        shown = task if augmentation is None or augmentation.is_identity else augmentation.apply_task(task)
        return shown, [p.input for p in shown.train] + [p.input for p in shown.test]

    @staticmethod
    def _graded(task: Task, shown: Task, augmentation: Augmentation | None, results: list[InputResult],
                start: float) -> ExecutionResult:
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

    def grade(self, task: Task, code: str, augmentation: Augmentation | None = None) -> ExecutionResult:
        """Run `code` on all train and test inputs; score it against the train outputs.

        With an augmentation, the program was written for the augmented task: it runs on the
        augmented inputs and its outputs are reverted before they are compared.
        """
        start = time.monotonic()
        shown, inputs = self._inputs(task, augmentation)
        results, _ = self.run(code, inputs)
        return self._graded(task, shown, augmentation, results, start)

    def grade_many(self, task: Task, codes: Sequence[str],
                   augmentation: Augmentation | None = None) -> list[ExecutionResult]:
        """`grade` of each code, in order: one job in "job" isolation. Each result's `seconds` is its own run's."""
        shown, inputs = self._inputs(task, augmentation)
        graded = []
        for results, seconds, _ in self.run_many(codes, inputs):
            result = self._graded(task, shown, augmentation, results, time.monotonic())
            graded.append(result.model_copy(update={"seconds": seconds}))
        return graded

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
