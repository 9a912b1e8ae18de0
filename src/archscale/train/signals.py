"""Preemption signals: SIGTERM (scancel, node shutdown) and SIGUSR1 (SLURM's ``--signal``
warning before a time limit) ask the loop to checkpoint at the end of the current step and exit.

The handler only records the request; the loop polls :meth:`Preemption.requested` between
steps, so a checkpoint is never written from inside a signal handler.
"""

from __future__ import annotations

import signal

#: Signals that mean "save and stop".
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised by the loop after saving a checkpoint in response to a signal."""

    def __init__(self, signum: int, step: int):
        self.signum = signum
        self.step = step
        super().__init__(f"received {signal.Signals(signum).name}: checkpoint saved at step {step}, exiting")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Preemption:
    """Install handlers for the preemption signals; remember the first one received."""

    def __init__(self, signals=PREEMPT_SIGNALS):
        self.signum: int | None = None
        self._signals = tuple(signals)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            print(f"[archscale] received {signal.Signals(signum).name}: will checkpoint after this step", flush=True)

    def install(self) -> "Preemption":
        for s in self._signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "Preemption":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()
