"""The sandboxed executor: verdicts per input, limits, and a helper that keeps serving."""

import os
from pathlib import Path

import pytest

from arcsynth.common.data import load_tasks
from arcsynth.common.models import Task
from arcsynth.workers.sandbox.executor import Executor

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]}],
            test=[{"input": [[5, 6]]}])
FLIP = "def transform(grid):\n    return grid[:, ::-1]"


@pytest.fixture(scope="module", params=["run", "job"])
def ex(request):
    """An executor in each isolation mode: in "job" mode each grade is a one-program job process."""
    e = Executor(timeout_s=1.5, memory_mb=512, isolation=request.param)
    e.start()
    yield e
    e.close()


@pytest.fixture(scope="module")
def redis_server():
    from arcsynth.producer.redis_server import RedisServer

    with RedisServer() as server:
        yield server


def needs(ex, *layers):
    missing = [name for name in layers if not ex.layers.get(name)]
    if missing:
        pytest.skip(f"isolation layer(s) {missing} cannot be set up on this machine")


def test_correct_program(ex):
    r = ex.grade(TASK, FLIP)
    assert r.train_correct == 2 and r.all_train_correct and r.train_pixel_accuracy == 1.0
    assert r.test[0].output == [[6, 5]] and r.fingerprint


@pytest.mark.parametrize("code, error, message", [
    ("def transform(grid):\n    while True: pass", "timeout", "no result within"),
    ("def transform(grid):\n    x = bytearray(8 * 1024**3)", "memory", "MemoryError"),
    ("def transform(grid:\n", "syntax_error", "line 1"),
    ("x = 1", "no_transform", "defines no function transform"),
    ("def transform(grid):\n    raise ValueError('boom')", "exception", "ValueError: boom"),
    ("def transform(grid):\n    return [[10]]", "invalid_output", "colour 10"),
    ("def transform(grid):\n    return [[1, 2], [3]]", "invalid_output", "different lengths"),
    ("def transform(grid):\n    return 'nope'", "invalid_output", "not a list"),
    ("import numpy as np\ndef transform(grid):\n    return np.zeros((1000, 1000), int)", "invalid_output", "larger than 30x30"),
    ("def transform(grid):\n    import os; os._exit(0)", "crashed", "ended the process"),
    ("def transform(grid):\n    import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crashed", "signal 11"),
    ("def f(n): return f(n + 1)\ndef transform(grid):\n    return f(0)", "exception", "RecursionError"),
])
def test_hostile_programs_get_exact_verdicts_and_the_helper_still_serves(ex, code, error, message):
    r = ex.grade(TASK, code)
    assert [x.error for x in r.train + r.test] == [error] * 3
    assert message in r.train[0].message
    assert ex.grade(TASK, FLIP).all_train_correct


def test_partial_results_survive_a_later_timeout(ex):
    code = "def transform(grid):\n    if grid[0, 0] == 3:\n        while True: pass\n    return grid[:, ::-1]"
    r = ex.grade(TASK, code)
    assert [x.error for x in r.train + r.test] == ["none", "timeout", "timeout"]
    assert r.train_correct == 1 and r.train_pixel_accuracy == 0.5


def test_untrusted_code_sees_no_environment_and_works_in_a_temp_dir(ex, monkeypatch):
    os.environ["ARCSYNTH_SECRET_FOR_TEST"] = "hunter2"
    try:
        ex.close()  # a fresh helper started while the secret is in the worker's environment
        code = ("import os\ndef transform(grid):\n"
                "    open('scratch.txt', 'w').write('x')\n"
                "    leaked = any('hunter2' in v for v in os.environ.values())\n"
                "    in_tmp = os.getcwd().startswith('/tmp/arcsynth-run-')\n"
                "    return [[int(leaked), int(in_tmp)]]")
        assert ex.grade(TASK, code).test[0].output == [[0, 1]]
    finally:
        del os.environ["ARCSYNTH_SECRET_FOR_TEST"]


def test_later_runs_are_unaffected_by_monkeypatching(ex):
    ex.grade(TASK, "import builtins\nbuiltins.len = lambda x: 0\ndef transform(grid):\n    return grid")
    assert ex.grade(TASK, "def transform(grid):\n    return [[len([1, 2, 3])]]").test[0].output == [[3]]


PROGRAMS = {  # hand-written solutions for ARC-AGI-1 training tasks
    "6150a2bd": "def transform(grid):\n    return grid[::-1, ::-1]",
    "74dd1130": "def transform(grid):\n    return grid.T",
    "67a3c6ac": "def transform(grid):\n    return grid[:, ::-1]",
    "68b16354": "def transform(grid):\n    return grid[::-1]",
    "a416b8f3": "import numpy as np\ndef transform(grid):\n    return np.hstack([grid, grid])",
    "c8f0f002": "def transform(grid):\n    g = grid.copy()\n    g[g == 7] = 5\n    return g",
    "d511f180": "def transform(grid):\n    g = grid.copy()\n    g[grid == 5] = 8\n    g[grid == 8] = 5\n    return g",
}


def test_correct_programs_solve_real_arc_tasks(ex):
    for task in load_tasks("arc-agi-1/training", task_ids=list(PROGRAMS)):
        r = ex.grade(task, PROGRAMS[task.id])
        assert r.all_train_correct, task.id
        assert [x.output for x in r.test] == [p.output for p in task.test], task.id


# Hostile programs against the full isolation (root or user namespaces, x86-64 seccomp).
# Each: code, the verdict on every input, a fragment of the message, the layers it relies on.
HOSTILE = {
    "fork_bomb": ("import os\ndef transform(grid):\n    while True:\n        os.fork()",
                  "exception", "PermissionError", ("seccomp",)),
    "os_system": ("import os\ndef transform(grid):\n    assert os.system('touch /tmp/pwned') == 0\n    return grid",
                  "exception", "AssertionError", ("seccomp",)),
    "subprocess": ("import subprocess\ndef transform(grid):\n    subprocess.run(['id'])\n    return grid",
                   "exception", "PermissionError", ("seccomp",)),
    "thread_bomb": ("import threading, time\ndef transform(grid):\n"
                    "    while True:\n        threading.Thread(target=time.sleep, args=(10,), daemon=True).start()",
                    "exception", "", ()),
    "write_outside_tmp": ("def transform(grid):\n    open('/tmp/evil.txt', 'w').write('x')\n    return grid",
                          "exception", "PermissionError", ("mount_namespace", "unprivileged_user")),
    "write_home": ("import os\ndef transform(grid):\n    open(os.path.expanduser('~root/evil'), 'w')\n    return grid",
                   "exception", "Error", ("unprivileged_user",)),  # PermissionError, or read-only in the minimal root
    "fill_disk": ("def transform(grid):\n    f = open('big', 'wb')\n    while True:\n        f.write(b'x' * 65536)",
                  "exception", "OSError", ()),
    "read_source": (f"def transform(grid):\n    return [[len(open({__file__!r}).read()) % 10]]",
                    "exception", "", ("mount_namespace",)),
    "read_proc_environ": ("def transform(grid):\n    return [[len(open('/proc/1/environ').read()) % 10]]",
                          "exception", "Error", ("unprivileged_user",)),  # no /proc in the minimal root
    "kill_parent": ("import os, signal\ndef transform(grid):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return grid",
                    "exception", "PermissionError", ("seccomp",)),
    "ignore_sigterm": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                       "def transform(grid):\n    while True: pass", "timeout", "no result within", ()),
    "sys_exit": ("import sys\ndef transform(grid):\n    sys.exit(0)", "exception", "SystemExit", ()),
    "ctypes_segfault": ("import ctypes\ndef transform(grid):\n    ctypes.string_at(0)", "crashed", "signal 11", ()),
    "stdout_flood": ("def transform(grid):\n    while True:\n        print('x' * 1000)",
                     "timeout", "", ()),  # printing past the cap is dropped: a print loop never ends
    "generator_forever": ("import itertools\ndef transform(grid):\n    return (row for row in itertools.repeat([1]))",
                          "invalid_output", "not a list", ()),
    "numpy_cpu_loop": ("import numpy as np\ndef transform(grid):\n    a = np.ones((2000, 2000))\n"
                       "    for _ in range(1000):\n        a = a @ a\n    return grid", "timeout", "", ()),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_more_hostile_programs(ex, name):
    code, error, message, layers = HOSTILE[name]
    needs(ex, *layers)
    r = ex.grade(TASK, code)
    assert [x.error for x in r.train + r.test] == [error] * 3, r.train[0].message
    assert message in r.train[0].message
    assert ex.grade(TASK, FLIP).all_train_correct
    assert not os.path.exists("/tmp/pwned") and not os.path.exists("/tmp/evil.txt")


def test_a_returned_grid_is_read_once(ex):
    """A cell whose int() answers differently each time: the value checked is the value sent (it was
    read twice, and the second, huge answer left the run unable to report: `crashed`)."""
    code = ("class Cell(int):\n    calls = 0\n    def __int__(self):\n        self.calls += 1\n"
            "        return 5 if self.calls == 1 else 10 ** 5000\n"
            "class Row(list):\n    def __len__(self):\n        return 1\n"
            "def transform(grid):\n    return [Row([Cell(1), Cell(1), Cell(1)])]")
    r = ex.grade(TASK, code)
    assert [(x.error, x.output) for x in r.train] == [("none", [[5, 5, 5]])] * 2, r.train[0].message


# System calls the filter denies that the layers above do not stop alone: each program makes the call
# (on itself where a target is needed, so it would succeed without the filter) and returns the errno.
_SYSCALL = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\ndef transform(grid):\n"
DENIED_CALLS = {
    "pidfd_open": ("    r = libc.syscall(434, os.getpid(), 0)", 1),  # the way to pidfd_send_signal another run
    "pidfd_send_signal": ("    r = libc.syscall(424, -1, 0, None, 0)", 1),
    "rt_sigqueueinfo": ("    r = libc.syscall(129, os.getpid(), 0, ctypes.create_string_buffer(128))", 1),
    "rt_tgsigqueueinfo": ("    r = libc.syscall(297, os.getpid(), os.getpid(), 0, ctypes.create_string_buffer(128))", 1),
    "process_vm_readv": ("    r = libc.syscall(310, os.getpid(), None, 0, None, 0, 0)", 1),
    "shmget": ("    r = libc.shmget(0, 1 << 20, 0o1600)\n    if r >= 0:\n        libc.shmctl(r, 0, None)", 1),
    "semget": ("    r = libc.semget(0, 1, 0o1600)\n    if r >= 0:\n        libc.semctl(r, 0, 0)", 1),
    "msgget": ("    r = libc.msgget(0, 0o1600)\n    if r >= 0:\n        libc.msgctl(r, 0, None)", 1),
    "mq_open": ("    r = libc.syscall(240, b'arcsynth-test', 0o100 | 2, 0o600, None)\n    if r >= 0:\n"
                "        libc.syscall(241, b'arcsynth-test')", 1),
    "keyctl": ("    r = libc.syscall(250, 0, -3, 0)", 1),  # the session keyring, the worker's
    "io_uring_setup": ("    r = libc.syscall(425, 1, ctypes.create_string_buffer(120))", 38),
    "fsopen": ("    r = libc.syscall(430, b'tmpfs', 0)", 1),
    "x32_socket": ("    r = libc.syscall(0x40000000 | 41, 2, 1, 0)", 38),  # ENOSYS on kernels without x32 too
    "sigio_owner": ("    rfd, wfd = os.pipe()\n    r = libc.fcntl(rfd, 8, os.getpid())", 1),  # F_SETOWN
    "sigio_signal": ("    rfd, wfd = os.pipe()\n    r = libc.fcntl(rfd, 10, 9)", 1),  # F_SETSIG: SIGKILL
}


@pytest.mark.parametrize("name", sorted(DENIED_CALLS))
def test_the_filter_denies_what_reaches_past_the_run(ex, name):
    """Signals by other routes than kill (pidfds, sigqueue), other processes' memory, IPC objects that
    outlive the run, the worker's keyrings, io_uring (whose work no filter sees), the new mount API
    and x32 calls: each fails with its errno, and the run goes on."""
    needs(ex, "seccomp")
    call, errno = DENIED_CALLS[name]
    r = ex.grade(TASK, f"{_SYSCALL}{call}\n    return [[int(r == -1 and ctypes.get_errno() == {errno})]]")
    assert [x.output for x in r.train] == [[[1]], [[1]]], r.train[0].message


def test_no_network_not_even_the_brokers_redis(ex, redis_server):
    needs(ex, "network_namespace")
    code = ("import socket\ndef transform(grid):\n"
            f"    socket.create_connection(('127.0.0.1', {redis_server.port}), timeout=1)\n    return grid")
    r = ex.grade(TASK, code)
    assert r.train[0].error == "exception" and ("PermissionError" in r.train[0].message
                                                or "OSError" in r.train[0].message)


def test_cannot_enqueue_a_celery_task(ex, redis_server):
    import redis

    code = ("def transform(grid):\n    from celery import Celery\n"
            f"    Celery(broker='{redis_server.url}').send_task('arcsynth.execute', args=(1,), queue='execute')\n"
            "    return grid")
    r = ex.grade(TASK, code)
    assert r.train[0].error in ("exception", "timeout")
    assert redis.Redis.from_url(redis_server.url).llen("execute") == 0


def test_cannot_import_the_project(ex):
    needs(ex, "mount_namespace")
    r = ex.grade(TASK, "def transform(grid):\n    import arcsynth.common.settings\n    return grid")
    assert r.train[0].error == "exception"
    assert r.train[0].message.split(":")[0] in ("ModuleNotFoundError", "ImportError", "PermissionError")
    source = Path(__file__).resolve().parents[2] / "common" / "settings.py"
    r = ex.grade(TASK, f"def transform(grid):\n    open({str(source)!r}).read()\n    return grid")
    assert r.train[0].error == "exception" and r.train[0].output is None


def test_printed_output_is_captured_and_capped(ex):
    ex.grade(TASK, "def transform(grid):\n    print('hello', grid.shape)\n    return grid")
    assert ex.last_output.startswith("hello (1, 2)")
    ex.grade(TASK, "def transform(grid):\n    print('y' * 100000)\n    return grid")
    assert len(ex.last_output) <= 4096


def test_a_correct_program_that_prints_a_lot_stays_correct_on_every_input(ex):
    """What goes past the cap is dropped: it does not reach the run's file-size limit (1 MiB), after
    which every print failed, and with it the later inputs of a correct program."""
    task = Task(id="p", train=[{"input": [[i]], "output": [[i]]} for i in range(1, 6)], test=[{"input": [[7]]}])
    r = ex.grade(task, "def transform(grid):\n    print('x' * 300_000)\n    return grid")
    assert r.train_correct == 5 and r.test[0].output == [[7]]
    assert ex.last_output.startswith("x" * 100) and len(ex.last_output) <= 4096


def test_required_layer_that_cannot_be_had_refuses_to_start():
    from arcsynth.workers.sandbox.executor import Executor, IsolationUnavailable

    with pytest.raises(IsolationUnavailable, match="no_such_layer"):
        Executor(require=["no_such_layer"]).start()


def test_programs_written_for_an_augmented_task_are_graded_on_the_original(ex):
    from arcsynth.common.augment import Augmentation

    task = load_tasks("arc-agi-1/training", task_ids=["67a3c6ac"])[0]  # flip left-right
    aug = Augmentation(transform="transpose", colours=(0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
    # Under a transpose, the left-right flip of the original is an up-down flip of what the model sees.
    r = ex.grade(task, "def transform(grid):\n    return grid[::-1]", aug)
    assert r.all_train_correct and [x.output for x in r.test] == [p.output for p in task.test]
    assert not ex.grade(task, "def transform(grid):\n    return grid[:, ::-1]", aug).all_train_correct


def test_operator_dsl_modules_are_importable_by_programs(tmp_path):
    dsl = tmp_path / "common.py"  # BARC-style programs do `from common import *`
    dsl.write_text("import numpy as np\n\ndef flip_lr(grid):\n    return np.asarray(grid)[:, ::-1]\n")
    e = Executor(timeout_s=2.0, dsl=[str(dsl)])
    try:
        r = e.grade(TASK, "from common import *\n\ndef transform(grid):\n    return flip_lr(grid)")
        assert r.all_train_correct, r.train[0].message
    finally:
        e.close()


def test_a_dead_spawner_costs_no_verdict():
    """The helper forks runs through its spawner (sandbox_spawner); if the spawner dies, the helper
    exits and the executor starts a new one: the next run still gets its true verdict."""
    import signal

    e = Executor(timeout_s=1.5, memory_mb=512)
    try:
        assert e.grade(TASK, FLIP).all_train_correct
        helper = e._proc.pid
        children = Path(f"/proc/{helper}/task/{helper}/children").read_text().split()
        assert len(children) == 1  # the spawner, idle between runs
        os.kill(int(children[0]), signal.SIGKILL)
        assert e.grade(TASK, FLIP).all_train_correct
        assert e._proc.pid != helper and not Path(f"/proc/{helper}").exists()  # the old one exited, reaped
    finally:
        e.close()
