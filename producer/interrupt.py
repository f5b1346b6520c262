"""Ctrl-C or SIGTERM during a run the command itself drives (`arcsynth local`): stop it the way
`arcsynth cancel` does, so its results are still written, instead of dying half-way.

`CancelOnSignal(cancel)`, entered around the producer's loop: the first SIGINT or SIGTERM calls
`cancel()` (which asks the producer to stop: it then revokes what has not started, records the
unfinished tasks as cancelled and writes the submission) on a thread of its own, since a signal
handler interrupts the main thread anywhere, maybe inside a Redis call of its own. The handlers the
process had are back from then on, so a second signal aborts at once. `signum` says which signal
came first (None if none did); leaving puts the old handlers back.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CancelOnSignal:
    def __init__(self, cancel: Callable[[], None]) -> None:
        self.cancel = cancel
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> CancelOnSignal:
        for s in _SIGNALS:
            if signal.getsignal(s) is not signal.SIG_IGN:  # one a shell told this process to ignore stays ignored
                self._previous[s] = signal.signal(s, self._received)
        return self

    def _received(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        self._restore()
        print(f"arcsynth: {signal.Signals(signum).name}: cancelling the run and writing its results "
              "(send it again to abort at once)", file=sys.stderr, flush=True)
        threading.Thread(target=self.cancel, name="cancel-on-signal", daemon=True).start()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    @property
    def exit_code(self) -> int:
        """The shell's code for a command ended by the signal (128 + its number), 0 if none came."""
        return 0 if self.signum is None else 128 + self.signum
