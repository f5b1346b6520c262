"""The layer names a user may require (`ARCSYNTH_EXEC_REQUIRE`, checked when settings are read) are
exactly those an execute worker reports."""

from __future__ import annotations

from arcsynth.common.settings import EXEC_LAYERS
from arcsynth.workers.sandbox.executor import Executor


def test_settings_know_every_layer_the_executor_reports():
    executor = Executor(timeout_s=2.0)
    executor.start()
    try:
        assert sorted(executor.layers) == sorted(EXEC_LAYERS)
    finally:
        executor.close()
