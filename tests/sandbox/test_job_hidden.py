"""Job isolation against poisoners of state that no module attribute reaches (`sandbox_hidden`).

In the style of `test_job`: in one job (FLIP, poisoner, probe, probe, FLIP) every program gets its run
isolation verdict. Each poisoner below left its change for the next program of the same job process
before the check watched it.
"""

from __future__ import annotations

import pytest

from .test_job import FLIP, TASK, both, same  # noqa: F401 - `both` is the fixture

_FAULTHANDLER = ("import _imp, importlib.machinery\n"  # a module of its own: sys.modules unchanged
                 "fh = _imp.create_builtin(importlib.machinery.ModuleSpec('faulthandler', None))\n")
HIDDEN = {
    "at_fork_handler": ("import os, sys\nos.register_at_fork(before=lambda: setattr(sys, 'X', 1))",
                        "import os, sys\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
                        "    return [[int(hasattr(sys, 'X'))]]"),
    "codec_error_handler": ("import codecs\ncodecs.register_error('evil', lambda e: ('?', e.end))",
                            "try:\n        return [[len('\\u00e9'.encode('ascii', 'evil'))]]\n"
                            "    except LookupError:\n        return [[0]]"),
    "codec_search_function": ("import codecs\ncodecs.register(lambda n: codecs.lookup('utf-8') if n == 'evil' else None)",
                              "import codecs\n    try:\n        codecs.lookup('evil')\n        return [[1]]\n"
                              "    except LookupError:\n        return [[0]]"),
    "typing_cache": ("import typing\ntyping.List[int].__args__ = (float,)",
                     "import typing\n    return [[len(typing.List[int].__args__[0].__name__)]]"),
    "gc_unfreeze": ("import gc\ngc.unfreeze()", "import gc\n    return [[int(gc.get_freeze_count() == 0)]]"),
    "scheduling_policy": ("import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))",
                          "import os\n    return [[os.sched_getscheduler(0)]]"),
    "finalizer_of_garbage": ("import builtins, gc\nclass A:\n    def __del__(self):\n        builtins.len = lambda x: 0\n"
                             "a = A()\na.me = a\ngc.collect()\ndel a",  # old garbage: a later full collection runs it
                             "import gc\n    gc.collect()\n    return [[len([1, 2, 3])]]"),
    "faulthandler_watchdog": (f"{_FAULTHANDLER}fh.dump_traceback_later(0.5, exit=True)",
                              "import time\n    time.sleep(0.4)\n    return grid"),
}


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_a_poisoner_of_hidden_state_costs_only_its_own_run(both, name):  # noqa: F811
    poison, probe = HIDDEN[name]
    poisoner, prober = f"{poison}\ndef transform(grid):\n    return grid", f"def transform(grid):\n    {probe}"
    same(both, TASK, [FLIP, poisoner, prober, prober, FLIP])
