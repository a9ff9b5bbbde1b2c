"""The stop signals, caught from the first moment of a training process.

    signals = StopSignals.install()     # before torch is imported
    signals.received                    # "SIGUSR2", or None
    signals.interrupted                 # Ctrl-C: save, but do not requeue
    signals.restore()                   # the previous handlers, when the training is over

USR2 (SLURM's warning before the time limit, as slurm/ asks for it), USR1 and SIGTERM
(preemption, the time limit itself) each mean "save now, then come back". SIGINT (Ctrl-C)
means "save now and stop": the same save, no requeue; a second Ctrl-C ends the process
at once. A default-action signal during the slow start-up (importing torch from a shared
file system, the rendezvous, the DALI build, the resume) would kill the rank; this flag
is acted on at the first step.

Python runs a handler only when the main thread returns to the interpreter, which it
does not while it waits in the rendezvous or in a hung collective (up to dist.timeout_s).
So the C-level handler also writes each signal's number to a pipe (signal.set_wakeup_fd),
and a thread that reads it ends the process at the second Ctrl-C, wherever the main
thread waits.
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGUSR2, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
INTERRUPTED_EXIT_CODE = 130  # the shell's 128 + SIGINT, after the interrupt's save


class StopSignals:
    """The name of the first stop signal this process received, or None."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, object] = {}
        self._wakeup: tuple[int, int, int] | None = None  # read end, write end, previous fd

    @classmethod
    def install(cls) -> StopSignals:
        signals = cls()
        for sig in SIGNALS:
            signals._previous[sig] = signal.signal(sig, signals._on_signal)
        signals._watch_interrupts()
        return signals

    def _watch_interrupts(self) -> None:
        read, write = os.pipe()
        os.set_blocking(write, False)  # a full pipe must never block the C handler
        self._wakeup = (read, write, signal.set_wakeup_fd(write, warn_on_full_buffer=False))
        threading.Thread(target=self._count_interrupts, args=(read,), daemon=True,
                         name="second-ctrl-c").start()

    @staticmethod
    def _count_interrupts(read: int) -> None:
        interrupts = 0
        while data := os.read(read, 64):  # b"" once restore() closed the write end
            interrupts += data.count(signal.SIGINT)
            if interrupts >= 2:
                os.write(2, b"second Ctrl-C: exiting without saving\n")
                os._exit(INTERRUPTED_EXIT_CODE)
        os.close(read)

    @property
    def interrupted(self) -> bool:
        return self.received == "SIGINT"

    def restore(self) -> None:
        """The handlers from before install (for callers in a longer-lived process)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._wakeup is not None:
            _, write, previous = self._wakeup
            signal.set_wakeup_fd(previous)
            os.close(write)  # the watching thread reads the end of the pipe and returns
            self._wakeup = None

    def _on_signal(self, signum: int, _frame) -> None:
        # Only a flag: the loop acts on it at the next step boundary, with all ranks.
        # Later signals (SLURM's SIGTERM after a requeue) change nothing, but a second
        # Ctrl-C is a person who will not wait for the save.
        if signum == signal.SIGINT and self.interrupted:
            os.write(2, b"second Ctrl-C: exiting without saving\n")
            os._exit(INTERRUPTED_EXIT_CODE)
        if signum == signal.SIGINT:  # a person's stop outranks a scheduler's
            self.received = "SIGINT"
        self.received = self.received or signal.Signals(signum).name
