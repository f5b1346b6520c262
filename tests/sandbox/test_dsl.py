"""DSL modules (ARCSYNTH_EXEC_DSL): they load in the listed order, and one that cannot be loaded stops the start.

A failure is a `DslImportError` (an `IsolationUnavailable`, so the execute worker's start check
prints it and exits 3) whose one-line message names the module and its error; a helper that dies
or hangs while loading is a `SandboxStartError` with what it last said.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arcsynth.common.models import Task
from arcsynth.workers.sandbox.executor import DslImportError, Executor, IsolationUnavailable, SandboxStartError

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}], test=[{"input": [[5, 6]]}])


def module(folder: Path, name: str, source: str) -> str:
    path = folder / name
    path.write_text(source)
    return str(path)


def start_error(dsl: list[str], **kw) -> str:
    """Start an executor with `dsl`; return the one-line message it refused with."""
    e = Executor(dsl=dsl, **kw)
    try:
        with pytest.raises(IsolationUnavailable) as info:
            e.start()
    finally:
        e.close()
    message = str(info.value)
    assert "\n" not in message and "seccomp" not in message and "namespace" not in message
    return message


@pytest.mark.parametrize("source, error", [
    ("import numpy as np\nimport no_such_dependency_for_arcsynth\n",
     "ModuleNotFoundError: No module named 'no_such_dependency_for_arcsynth' (line 2)"),
    ("def flip(grid:\n    return grid\n", "SyntaxError: "),
    ("x = 1\nraise RuntimeError('the DSL is broken\\non two lines')\n", "RuntimeError: the DSL is broken on two lines (line 2)"),
    ("import sys\nsys.exit(2)\n", "SystemExit: 2 (line 2)"),
    ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ("class E(Exception):\n    def __str__(self):\n        raise ValueError\nraise E\n", "E (line 4)"),
    ("from numpy import no_such_name\n", "ImportError: cannot import name 'no_such_name'"),
])
def test_a_module_that_fails_to_import_names_itself_and_its_error(tmp_path, source, error):
    path = module(tmp_path, "dsl.py", source)
    message = start_error([path])
    assert message.startswith(f"DSL module {path} failed to import: ") and error in message


def test_the_failure_is_a_dsl_import_error_the_worker_start_check_catches(tmp_path):
    path = module(tmp_path, "common.py", "import no_such_dependency_for_arcsynth\n")
    with pytest.raises(DslImportError) as info:
        Executor(dsl=[path]).start()
    assert isinstance(info.value, SandboxStartError) and isinstance(info.value, IsolationUnavailable)
    assert info.value.module == path


def test_modules_load_in_the_listed_order(tmp_path):
    base = module(tmp_path, "arc_types.py", "Grid = tuple\nBLACK = 0\n")
    dsl = module(tmp_path, "dsl.py", "from arc_types import *\n\ndef flip(grid):\n    return grid[:, ::-1]\n")
    message = start_error([dsl, base])
    assert message.startswith(f"DSL module {dsl} failed to import: ModuleNotFoundError: No module named 'arc_types'")
    assert f"arc_types ({base}) is listed after it: list it first" in message
    e = Executor(dsl=[base, dsl])
    try:
        r = e.grade(TASK, "from dsl import *\nfrom arc_types import BLACK\n\ndef transform(grid):\n"
                          "    return flip(grid) + BLACK")
        assert r.all_train_correct, r.train[0].message
    finally:
        e.close()


@pytest.mark.parametrize("name, reason", [
    ("json.py", "its name would hide the module json"),
    ("numpy.py", "its name would hide the module numpy"),
    ("my-dsl.py", "is not a module name"),
    ("dsl.txt", "not a Python source file"),
])
def test_modules_whose_name_cannot_be_imported_as_given_are_refused(tmp_path, name, reason):
    path = module(tmp_path, name, "X = 1\n")
    assert reason in start_error([path])


def test_two_modules_with_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = module(tmp_path / "a", "common.py", "X = 1\n")
    second = module(tmp_path / "b", "common.py", "X = 2\n")
    message = start_error([first, second])
    assert message.startswith(f"DSL module {second} failed to import") and first in message


def test_a_missing_module_is_refused_at_start_not_at_construction(tmp_path):
    e = Executor(dsl=[str(tmp_path / "nowhere.py")])
    with pytest.raises(DslImportError, match="nowhere.py failed to import: the file does not exist"):
        e.start()


def test_a_module_that_kills_the_helper_is_named_by_what_it_last_said(tmp_path):
    path = module(tmp_path, "dsl.py", "import os\nos._exit(0)\n")
    message = start_error([path])
    assert message.startswith("the sandbox helper exited with status 0 before it was ready")
    assert f"loading DSL module {path}" in message


def test_a_module_that_hangs_stops_the_start_after_the_start_timeout(tmp_path):
    path = module(tmp_path, "dsl.py", "while True:\n    pass\n")
    assert "did not start within 3 s" in start_error([path], start_timeout_s=3)


def test_a_module_that_prints_does_not_corrupt_the_helpers_replies(tmp_path):
    path = module(tmp_path, "chatty.py", "print('hello from the DSL')\nimport sys\nsys.stdout.write('{}\\n')\n"
                                         "def flip(grid):\n    return grid[:, ::-1]\n")
    e = Executor(dsl=[path])
    try:
        assert e.start()["rlimits"]
        assert e.grade(TASK, "from chatty import flip\ndef transform(grid):\n    return flip(grid)").all_train_correct
    finally:
        e.close()


def test_what_a_module_imports_stays_importable_in_runs(tmp_path):
    """A DSL's own dependencies are offered to runs (lazy submodules too); other packages are not."""
    path = module(tmp_path, "dsl.py", "import packaging\nimport six\n")
    program = ("import packaging.version, six\ndef transform(grid):\n"
               "    return [[int(packaging.version.Version('1.2').minor), int(six.PY3)]]")
    e = Executor(dsl=[path])
    try:
        assert e.grade(TASK, program).test[0].output == [[2, 1]]
    finally:
        e.close()
    e = Executor(packages=["packaging", "six"])
    try:
        assert e.grade(TASK, program).test[0].output == [[2, 1]]
    finally:
        e.close()
    e = Executor()
    try:
        e.start()
        if e.layers.get("minimal_root"):
            assert e.grade(TASK, program).test[0].error == "exception"
    finally:
        e.close()


def test_an_interpreter_without_numpy_is_a_clear_start_error(tmp_path):
    import venv

    venv.create(tmp_path / "bare", with_pip=False, symlinks=True)  # this interpreter, no packages at all
    message = start_error([], python=str(tmp_path / "bare" / "bin" / "python"))
    assert message.startswith("the sandbox helper failed to start: ModuleNotFoundError: No module named 'numpy'")


def test_an_interpreter_that_does_not_exist_is_a_clear_start_error(tmp_path):
    message = start_error([], python=str(tmp_path / "no-python"))
    assert message.startswith(f"the sandbox helper could not be started with {tmp_path / 'no-python'}: ")


def test_an_offered_package_that_does_not_import_is_a_clear_start_error():
    e = Executor(packages=["no_such_package_for_arcsynth"])
    with pytest.raises(SandboxStartError, match="the package no_such_package_for_arcsynth offered to programs does not "
                                                "import: ModuleNotFoundError"):
        e.start()


def test_a_dsl_at_fork_handler_runs_in_every_run(tmp_path):
    """The helper forks runs with glibc's fork, skipping CPython's own at-fork work; a DSL's handlers
    still run as os.fork runs them: `before` in the forking process before every fork, `after_in_child`
    last in the run."""
    path = module(tmp_path, "forkdsl.py", "import os\nSEEN = []\nos.register_at_fork(before=lambda: SEEN.append('b'), "
                                          "after_in_child=lambda: SEEN.append('c'))\n")
    e = Executor(dsl=[path])
    try:
        code = "import forkdsl\ndef transform(grid):\n    return [[forkdsl.SEEN.count('b'), int(forkdsl.SEEN[-1] == 'c')]]"
        outputs = [e.grade(TASK, code).train[0].output for _ in range(3)]
    finally:
        e.close()
    (first, _), = outputs[0]
    assert outputs == [[[first, 1]], [[first + 1, 1]], [[first + 2, 1]]]


def test_a_helper_with_a_thread_forks_runs_with_os_fork(tmp_path):
    """A DSL that leaves a thread running makes the helper fork with os.fork (whose after-fork repairs
    then matter): runs still work, and `random` reseeds itself in each."""
    path = module(tmp_path, "threaddsl.py", "import threading, time\n"
                                            "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    e = Executor(dsl=[path])
    try:
        code = "import random, threaddsl\ndef transform(grid):\n    return [[random.randint(0, 9) for _ in range(8)]]"
        outputs = {str(e.grade(TASK, code).train[0].output) for _ in range(3)}
    finally:
        e.close()
    assert len(outputs) == 3  # equal by chance with odds of 1e-8


@pytest.mark.parametrize("isolation", ["run", "job"])
def test_random_starts_as_the_helper_left_it_in_every_run(isolation):
    """Like numpy's generator, `random` is not reseeded per run: a program's output does not depend on
    the run, and a program that seeds it leaves no trace in the next."""
    e = Executor(isolation=isolation)
    try:
        probe = "import random\ndef transform(grid):\n    return [[random.randint(0, 9) for _ in range(8)]]"
        seeder = "import random\nrandom.seed(1)\ndef transform(grid):\n    return grid"
        outputs = [r.train[0].output for r in e.grade_many(TASK, [probe, seeder, probe, probe])]
    finally:
        e.close()
    import random

    random.seed(1)
    seeded = [[random.randint(0, 9) for _ in range(8)]]
    assert outputs[0] == outputs[2] == outputs[3] != seeded
