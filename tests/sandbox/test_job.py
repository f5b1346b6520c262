"""Job isolation gives exactly the verdicts of run isolation, even when a program of the job poisons shared state.

Each poisoner below changes something a job process shares between its programs, and its probe
is a program that would see the change. In one job (poisoner, probe, probe), the probes must get
the verdicts they get in run isolation, where every program has a fresh fork: the check after the
poisoner replaces the job process. The corpus of `benchmarks/corpus.py` and every hostile program
of the other tests, run as one job, give the verdicts of run isolation too.
"""

from __future__ import annotations

import importlib.util
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from arcsynth.common.models import Task
from arcsynth.workers.sandbox.executor import Executor

from .test_channel import CHANNEL
from .test_executor import HOSTILE, PROGRAMS

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]}],
            test=[{"input": [[5, 6]]}])
FLIP = "def transform(grid):\n    return grid[:, ::-1]"
REPO = Path(__file__).resolve().parents[2]

# name: (the poisoner's code, run at load time, then `transform` returns the grid; the probe's transform body)
POISONS = {
    "builtins": ("import builtins\nbuiltins.len = lambda x: 0", "return [[len([1, 2, 3])]]"),
    "builtins_added": ("import builtins\nbuiltins.EVIL = 7", "return [[int('EVIL' in dir(__builtins__))]]"),
    "numpy_function": ("import numpy as np\nnp.flip = lambda g, *a, **k: g * 0", "import numpy as np\n    return np.flip(grid)"),
    "numpy_random_seed": ("import numpy as np\nnp.random.seed(1)\nnp.random.randint(10)",
                          "import numpy as np\n    return np.random.randint(0, 10, size=(1, 8))"),
    "numpy_errors": ("import numpy as np\nnp.seterr(all='raise')",
                     "import numpy as np\n    return [[int(np.geterr()['divide'] == 'raise')]]"),
    "numpy_print": ("import numpy as np\nnp.set_printoptions(threshold=1)",
                    "import numpy as np\n    return [[len(str(np.arange(9))) % 10]]"),
    "class_attribute": ("import collections\ncollections.Counter.most_common = lambda self, n=None: [(9, 1)]",
                        "import collections\n    return [[collections.Counter([1, 1, 2]).most_common(1)[0][0]]]"),
    "module_dict": ("import copyreg\ncopyreg.dispatch_table[complex] = None",
                    "import copyreg\n    return [[int(complex in copyreg.dispatch_table)]]"),
    "atexit": ("import atexit\natexit.register(print, 'bye')", "import atexit\n    return [[atexit._ncallbacks()]]"),
    "signal_handler": ("import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)",
                       "import signal\n    return [[int(signal.getsignal(signal.SIGALRM) == signal.SIG_DFL)]]"),
    "signal_mask": ("import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})",
                    "import signal\n    return [[len(signal.pthread_sigmask(signal.SIG_BLOCK, set()))]]"),
    "thread": ("import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
               "import threading\n    return [[threading.active_count()]]"),
    "raw_thread": ("import _thread, time\n_thread.start_new_thread(time.sleep, (30,))",
                   "import _thread\n    return [[_thread._count()]]"),
    "raw_thread_ended": ("import _thread\n_thread.start_new_thread(lambda: None, ())",
                         "import _thread\n    return [[_thread._count()]]"),
    "interval_timer": ("import signal\nsignal.setitimer(signal.ITIMER_REAL, 0.3)",
                       "import time\n    time.sleep(0.5)\n    return grid"),
    "cpu_timer": ("import signal\nsignal.setitimer(signal.ITIMER_PROF, 0.2)",
                  "t = __import__('time').process_time()\n    while __import__('time').process_time() - t < 0.3:\n"
                  "        pass\n    return grid"),
    "alarm": ("import signal\nsignal.alarm(5)", "import signal\n    return [[int(signal.alarm(0) > 0)]]"),
    "priority": ("import os\nos.nice(5)", "import os\n    return [[os.getpriority(os.PRIO_PROCESS, 0)]]"),
    "affinity": ("import os\nos.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})",
                 "import os\n    return [[len(os.sched_getaffinity(0)) % 10]]"),
    "abc_register": ("import collections.abc\ncollections.abc.Sequence.register(set)",
                     "import collections.abc\n    return [[int(issubclass(set, collections.abc.Sequence))]]"),
    "asyncgen_hooks": ("import sys\nsys.set_asyncgen_hooks(firstiter=print)",
                       "import sys\n    return [[int(sys.get_asyncgen_hooks().firstiter is None)]]"),
    "coroutine_tracking": ("import sys\nsys.set_coroutine_origin_tracking_depth(5)",
                           "import sys\n    return [[sys.get_coroutine_origin_tracking_depth()]]"),
    "dlopen_flags": ("import sys\nsys.setdlopenflags(3)", "import sys\n    return [[sys.getdlopenflags() % 10]]"),
    "locale": ("import locale\nlocale.setlocale(locale.LC_ALL, 'C.UTF-8')",
               "import locale\n    return [[len(locale.setlocale(locale.LC_ALL)) % 10]]"),
    "numpy_error_callback": ("import numpy as np\nnp.seterrcall(print)",
                             "import numpy as np\n    return [[int(np.geterrcall() is None)]]"),
    "module_list": ("import sys\nsys.argv.append('x')", "import sys\n    return [[len(sys.argv)]]"),
    "module_set": ("import os\nos.supports_fd.add(print)", "import os\n    return [[int(print in os.supports_fd)]]"),
    "chdir": ("import os\nos.chdir('/')", "import os\n    return [[int(os.getcwd() == '/')]]"),
    "files_left": ("open('left.txt', 'w').write('x')", "import os\n    return [[int(os.path.exists('left.txt'))]]"),
    "environment": ("import os\nos.environ['EVIL'] = '1'", "import os\n    return [[int('EVIL' in os.environ)]]"),
    "sys_path": ("import sys\nsys.path.insert(0, '/evil')", "import sys\n    return [[int('/evil' in sys.path)]]"),
    "sys_modules": ("import sys\nsys.modules['evil'] = sys", "import sys\n    return [[int('evil' in sys.modules)]]"),
    "recursion_limit": ("import sys\nsys.setrecursionlimit(60)", "import sys\n    return [[sys.getrecursionlimit() % 7]]"),
    "trace_hook": ("import sys\nsys.settrace(lambda *a: None)", "import sys\n    return [[int(sys.gettrace() is None)]]"),
    "stdout": ("import sys, io\nsys.stdout = io.StringIO()", "print('seen')\n    return grid"),
    "warnings": ("import warnings\nwarnings.simplefilter('error')", "import warnings\n    return [[len(warnings.filters) % 10]]"),
    "gc": ("import gc\ngc.disable()", "import gc\n    return [[int(gc.isenabled())]]"),
    "umask": ("import os\nos.umask(0)", "import os\n    m = os.umask(0o22)\n    os.umask(m)\n    return [[m % 10]]"),
    "descriptor": ("import os\nos.open('/dev/null', os.O_RDONLY)",
                   "import os\n    return [[sum(1 for fd in range(20) if os.path.exists(f'/dev/fd/{fd}') or _open(fd))]]"),
    "resource_limit": ("import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (8, 8))",
                       "import resource\n    return [[resource.getrlimit(resource.RLIMIT_NOFILE)[0] % 10]]"),
    "function_code": ("import json\njson.loads.__code__ = (lambda *a, **k: 7).__code__",
                      "import json\n    return [[json.loads('3')]]"),
    "decimal_context": ("import decimal\ndecimal.getcontext().prec = 2",
                        "import decimal\n    return [[len(str(decimal.Decimal(1) / 7)) % 10]]"),
    "decimal_default_context": ("import decimal\ndecimal.DefaultContext.prec = 2",
                                "import decimal\n    return [[decimal.DefaultContext.prec % 10]]"),
    "instance_attribute": ("import random\nrandom._inst._randbelow = lambda n: 0",
                           "import random\n    random.seed(3)\n    return [[random.choice(range(1, 10)) for _ in range(8)]]"),
    "encoder_attribute": ("import json\njson._default_encoder.indent = 1",
                          "import json\n    return [[len(json.dumps([1, 2])) % 10]]"),
    "stream_closed": ("import sys\nsys.stdout.close()", "print('seen')\n    return grid"),
    "stream_method": ("import sys\nsys.stdout.write = lambda s: 0", "print('seen')\n    return grid"),
    "directory_mode": ("import os\nos.chmod('.', 0o500)",
                       "import os\n    open('x', 'w').close()\n    os.remove('x')\n    return grid"),
    "gc_debug": ("import gc\ngc.set_debug(gc.DEBUG_SAVEALL)", "import gc\n    return [[int(gc.get_debug() == 0)]]"),
    "cpu_hard_limit": ("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (1, 1))", "return grid"),
    "channel_flags": ("import fcntl, os\nfcntl.fcntl(3, fcntl.F_SETFL, fcntl.fcntl(3, fcntl.F_GETFL) | os.O_NONBLOCK)",
                      "import fcntl, os\n    return [[int(bool(fcntl.fcntl(3, fcntl.F_GETFL) & os.O_NONBLOCK))]]"),
    "other_frames": ("import sys, threading\nf = sys._current_frames()[threading.get_ident()]\nwhile f is not None:\n"
                     "    grids = f.f_locals.get('inputs')\n    if isinstance(grids, list):\n"
                     "        grids[0] = [[7]]\n    f = f.f_back", "return grid"),
    # A signal handler is called with the running frame (no audit event), whose callers hold the job's codes;
    # SIGINT is ignored, so the handler, once run, could be taken off again leaving the kernel's action as it was.
    "signal_handler_frame": ("import signal\ndef _rewrite(signum, frame):\n    while frame is not None:\n"
                             "        codes = frame.f_locals.get('codes')\n        if isinstance(codes, list):\n"
                             "            codes[:] = ['def transform(grid):\\n    return [[7]]'] * len(codes)\n"
                             "        frame = frame.f_back\nsignal.signal(signal.SIGINT, _rewrite)\n"
                             "signal.raise_signal(signal.SIGINT)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)",
                             "return grid"),
    "import_finder_cache": ("import sys\nfor f in list(sys.path_importer_cache.values()):\n"
                            "    if hasattr(f, '_path_cache'):\n        f._path_cache.clear()",
                            "import colorsys\n    return grid"),  # not loaded yet: its finder's file names decide
    "import_finder_attribute": ("import sys\nfor f in list(sys.path_importer_cache.values()):\n"
                                "    if hasattr(f, '_path_cache'):\n        f._path_cache = set()",
                                "import colorsys\n    return grid"),
    "finalizer_prints": ("import sys\nclass A:\n    def __del__(self):\n        sys.stdout.write('left')\n"
                         "a = A()\na.me = a",  # garbage the check collects: it printed into the next program's output
                         "print('mine')\n    return grid"),
    "sandbox_globals": ("import sys\ntype(sys.stdout.buffer.raw).write.__globals__['OUTPUT_CAP'] = 0",
                        "print('seen')\n    return grid"),
    "writer_descriptor": ("import sys\nsys.stdout.buffer.raw.fd = 99", "print('seen')\n    return grid"),
    "check_switched_off": ("import sandbox_guard\nsandbox_guard.Guard.changed = lambda self: ''\n"
                           "import builtins\nbuiltins.len = lambda x: 0", "return [[len([1, 2, 3])]]"),
}
UNSEEDED = {"numpy_random_seed"}
OPEN = ("def _open(fd):\n    import os\n    try:\n        os.fstat(fd)\n        return True\n"
        "    except OSError:\n        return False\n")


@pytest.fixture(scope="module")
def both():
    run, job = Executor(timeout_s=2.0, memory_mb=512), Executor(timeout_s=2.0, memory_mb=512, isolation="job")
    run.start()
    job.start()
    yield run, job
    run.close()
    job.close()


def verdicts(results) -> list:
    return [r.model_dump(exclude={"seconds"}) for r in results]


def same(both, task: Task, codes: list[str]) -> None:
    run, job = both
    alone = [run.grade(task, code) for code in codes]
    together = job.grade_many(task, codes)
    for code, a, b in zip(codes, verdicts(alone), verdicts(together)):
        assert a == b, code


@pytest.mark.parametrize("name", sorted(POISONS))
def test_a_poisoner_costs_only_its_own_run(both, name):
    poison, probe = POISONS[name]
    poisoner = f"{poison}\ndef transform(grid):\n    return grid"
    prober = f"{OPEN}def transform(grid):\n    {probe}"
    run, job = both
    if name in UNSEEDED:  # numpy.random, imported by the program, is seeded afresh in every process
        seeded = np.random.RandomState(1)
        seeded.randint(10)
        poisoned = seeded.randint(0, 10, size=(1, 8)).tolist()  # what a prober would draw after the poisoner
        for mode in both:
            probes = verdicts(mode.grade_many(TASK, [prober, poisoner, prober, prober]))
            drawn = [p["train"][0]["output"] for p in probes[2:]]
            assert poisoned not in drawn and drawn[0] != drawn[1]  # each 1e-8 by chance
        return
    same(both, TASK, [FLIP, poisoner, prober, prober, FLIP])
    outputs = [o for _, _, o in job.run_many([poisoner, prober], [[[1, 2]]])]
    assert outputs[1] == run.run_many([prober], [[[1, 2]]])[0][2]


@pytest.mark.parametrize("target", ["time.sleep, (30,)", "lambda: None, ()"])
def test_a_thread_that_has_not_run_yet_is_seen(both, target):
    """`_thread.start_new_thread` returns before the new thread first runs (and before `_count()` or,
    before Python 3.13, any audit event sees it): the check must still replace the process, and the
    helper's go must never reach such a thread (its default action would end the next program)."""
    poisoner = f"import _thread, time\nfor _ in range(3):\n    _thread.start_new_thread({target})\n" \
               "def transform(grid):\n    return grid"
    prober = "def transform(grid):\n    import _thread\n    return [[_thread._count()]]"
    _, job = both
    results = job.grade_many(TASK, [poisoner, prober] * 40)  # without the fix most pairs failed here
    probes = {(r.train[0].error, str(r.train[0].output)) for r in results[1::2]}
    assert probes == {("none", "[[0]]")}


def test_hostile_programs_in_one_job_get_their_run_verdicts(both):
    hostile = [code for code, *_ in HOSTILE.values() if "fill_disk" not in code and "a = a @ a" not in code]
    same(both, TASK, [FLIP, *hostile, FLIP])


def test_channel_forgers_in_one_job_get_their_run_verdicts(both):
    codes = [FLIP]
    for code, _, _ in CHANNEL.values():
        codes += [code, FLIP]
    same(both, TASK, codes)


def test_the_corpus_and_real_programs_give_the_same_verdicts():
    spec = importlib.util.spec_from_file_location("corpus", REPO / "benchmarks" / "corpus.py")
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    run, job = Executor(timeout_s=5.0), Executor(timeout_s=5.0, isolation="job")
    try:
        tasks = {}
        for task, _ in corpus.corpus():
            tasks[task.id] = task
        for task in list(tasks.values())[:6]:
            codes = [*corpus.PROGRAMS, *PROGRAMS.values()]
            together = job.grade_many(task, codes)
            alone = [run.grade(task, code) for code in codes]
            assert verdicts(alone) == verdicts(together), task.id
    finally:
        run.close()
        job.close()


def test_a_job_with_a_timeout_and_a_crash_goes_on_in_a_fresh_process(both):
    _, job = both
    codes = ["def transform(grid):\n    while True: pass", FLIP, "import os\ndef transform(grid):\n    os._exit(3)", FLIP]
    errors = [[r.error for r in g.train] for g in job.grade_many(TASK, codes)]
    assert errors == [["timeout"] * 2, ["none"] * 2, ["crashed"] * 2, ["none"] * 2]


SIGNALS_SEEN = ("import os, signal\ndef transform(grid):\n    print(os.getpid())\n"
                "    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())\n"
                "    return [[len(blocked), int(signal.getsignal(signal.SIGHUP) == signal.SIG_DFL)]]")


@pytest.mark.parametrize("isolation", ["run", "job"])
def test_signals_the_executors_process_inherited_do_not_reach_programs(isolation):
    """An executor started by a thread that blocks a signal (as under `perf record`), in a process that
    ignores another (as under `nohup`): its programs still run with nothing blocked and every
    signal's default action, and a job's programs share one process (before the fix, the job
    process saw the inherited mask after each program and was replaced every time)."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ex = Executor(timeout_s=2.0, memory_mb=512, isolation=isolation)
    try:
        def start() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
            ex.start()

        starter = threading.Thread(target=start)
        starter.start()
        starter.join()
        runs = ex.run_many([SIGNALS_SEEN] * 3, [[[1, 2]]])
    finally:
        ex.close()
        signal.signal(signal.SIGHUP, before)
    assert [[r.model_dump(include={"error", "output"}) for r in results] for results, _, _ in runs] == \
        [[{"error": "none", "output": [[0, 1]]}]] * 3
    pids = {output.strip() for _, _, output in runs}
    assert len(pids) == (1 if isolation == "job" else 3)


def test_isolation_must_be_run_or_job():
    with pytest.raises(ValueError, match="isolation"):
        Executor(isolation="thread")


DSL = '''"""A BARC-style DSL: helpers over numpy grids, with module-level state a careless program might touch."""
import numpy as np
from collections import Counter

BACKGROUND = 0
PALETTE = {"red": 2, "blue": 1}


def flip_lr(grid):
    return np.asarray(grid)[:, ::-1]


def most_common_colour(grid):
    return Counter(np.asarray(grid).ravel().tolist()).most_common(1)[0][0]


def recolour(grid, source, target):
    out = np.array(grid)
    out[out == source] = target
    return out
'''
DSL_PROGRAMS = [
    "from common import *\ndef transform(grid):\n    return flip_lr(grid)",
    "from common import *\ndef transform(grid):\n    return recolour(grid, 1, PALETTE['red'])",
    "import common\ncommon.BACKGROUND = 5\ndef transform(grid):\n    return grid",  # poisons the DSL
    "from common import *\ndef transform(grid):\n    return [[BACKGROUND]]",
    "import common\ncommon.PALETTE['red'] = 9\ndef transform(grid):\n    return grid",  # poisons a DSL dict
    "from common import *\ndef transform(grid):\n    return recolour(grid, 1, PALETTE['red'])",
    "from common import *\ndef transform(grid):\n    return np.full_like(grid, most_common_colour(grid))",
]


def test_dsl_programs_and_dsl_poisoners_give_the_same_verdicts(tmp_path):
    dsl = tmp_path / "common.py"
    dsl.write_text(DSL)
    run = Executor(timeout_s=2.0, dsl=[str(dsl)])
    job = Executor(timeout_s=2.0, dsl=[str(dsl)], isolation="job")
    try:
        alone = [run.grade(TASK, code) for code in DSL_PROGRAMS]
        together = job.grade_many(TASK, DSL_PROGRAMS)
        assert verdicts(alone) == verdicts(together)
        assert together[3].test[0].output == [[0]] and together[5].test[0].output == [[5, 6]]
    finally:
        run.close()
        job.close()
