"""A rank's own watchdog: a rank stuck outside any collective (a checkpoint write on a hung
file system, a deadlocked loader, a CUDA call that never returns) ends as a crash, which
the job script answers with a restart from the newest checkpoint.

    watchdog = Watchdog(Timeouts.of(cfg.dist), fire)   # fire(message): log, exit
    watchdog.start()                    # "start-up": until the first step is done
    watchdog.stepped()                  # after every optimizer step
    with watchdog.phase("save"): ...    # also "validation" (with images=...)
    watchdog.stop()

Timeouts, each 0 to turn that phase's off (dist.*_timeout_s):
- start-up: from the process start to its first step (the rendezvous, the build, the
  resume, torch.compile, the first DALI batches): startup_timeout_s.
- a step: max(step_timeout_s, 10 x the slowest step seen between two steps, timeout_s + 60).
  The first step after the start or after a save or validation is not measured (it
  carries a compile, a new epoch's first batches), and the slack of 10 covers the slower
  steps a healthy run has (a log flush, W&B, a loader refill).
- a save: max(save_timeout_s, timeout_s + 60). Validation with precise BN:
  max(validation_timeout_s, timeout_s + 60, 10 x the images to evaluate x the slowest
  seen step's time per image; a forward pass costs about a third of a training step).
- the step after a save or validation: the larger of a step's and that phase's timeout.
A process stopped whole (SIGSTOP, a hung file system or driver holding every thread)
cannot fire; its watchdog thread notices the gap once it runs again and the rank's ending
says so (stalled_s), which names it as the culprit and not its peers.

A collective that waits for a dead or frozen peer fails by itself after dist.timeout_s,
with the clearer "a collective failed"; every timeout here is longer (by a minute, or by
timeout_s itself when that is shorter), so when the
watchdog fires this rank itself is stuck, and the job script counts it as the culprit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

STALL_S = 10.0  # the watchdog's own thread did not run this long: the whole process was
# stopped (SIGSTOP, a hung file system or driver holding every thread); it wakes at least
# every STALL_S / 4 s, so a gap this long is no scheduling delay
SLACK = 10.0  # a healthy step is seldom ten times the slowest one seen; a hang is forever
MARGIN_S = 60.0  # past dist.timeout_s (or twice it, if less): a waiting collective fails
# before the watchdog does


@dataclass(frozen=True)
class Timeouts:
    startup_s: float
    step_s: float
    save_s: float
    validation_s: float
    collective_s: float  # dist.timeout_s

    @classmethod
    def of(cls, dist) -> Timeouts:
        """From the config's dist section."""
        return cls(dist.startup_timeout_s, dist.step_timeout_s, dist.save_timeout_s,
                   dist.validation_timeout_s, dist.timeout_s)

    def _floor(self, seconds: float, *more: float) -> float:
        collective = self.collective_s + min(MARGIN_S, self.collective_s)
        return 0.0 if seconds <= 0 else max(seconds, collective, *more)

    def startup(self) -> float:
        return self._floor(self.startup_s)

    def step(self, slowest_s: float) -> float:
        return self._floor(self.step_s, SLACK * slowest_s)

    def save(self) -> float:
        return self._floor(self.save_s)

    def validation(self, slowest_per_image_s: float, images: int) -> float:
        if slowest_per_image_s <= 0:  # no step measured yet (a resume evaluates first)
            return self._floor(self.validation_s, self.startup())
        return self._floor(self.validation_s, SLACK * slowest_per_image_s * images)

    def describe(self) -> str:
        def seconds(value: float) -> str:
            return "off" if value <= 0 else f"{value:.0f} s"
        return (f"watchdog: start-up {seconds(self.startup())}, step "
                f"{seconds(self.step(0))} or 10x the slowest step, save {seconds(self.save())}, "
                f"validation {seconds(self.validation(1e-9, 0))} or more by its size "
                "(dist.*_timeout_s)")


class Watchdog:
    def __init__(self, timeouts: Timeouts, fire: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 stalled: Callable[[float], None] = lambda seconds: None):
        """`fire(message)` runs in the watchdog's thread once a phase overruns; it is
        expected to end the process. `stalled(seconds)`: the process was stopped whole for
        that long (the longest such gap so far), told once it runs again."""
        self.timeouts, self.fire, self.clock, self.stalled = timeouts, fire, clock, stalled
        self.longest_stall_s = 0.0
        self.slowest_s = 0.0  # between two steps, in the "step" phase only
        self.per_image_s = 0.0  # the slowest step's seconds per image of this rank
        self.name, self.limit, self.since = "", 0.0, 0.0
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        self._arm("start-up", self.timeouts.startup())
        self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._changed.set()

    def stepped(self, images: int = 0) -> None:
        """An optimizer step is done; `images`: this rank's images in it."""
        now = self.clock()
        if self.name == "step":
            seconds = now - self.since
            if seconds > self.slowest_s:
                self.slowest_s = seconds
                self.per_image_s = seconds / images if images else 0.0
        self._arm("step", self.timeouts.step(self.slowest_s))

    @contextmanager
    def phase(self, name: str, images: int = 0) -> Iterator[None]:
        """A save ("save") or precise BN with validation ("validation", `images` to go
        through); the step after it gets the larger of its and a step's timeout."""
        if name == "save":
            limit = self.timeouts.save()
        else:
            limit = self.timeouts.validation(self.per_image_s, images)
        previous = self.name
        self._arm(name, limit)
        yield
        if previous == "start-up":  # a resume that evaluated first: still starting
            self._arm("start-up", self.timeouts.startup())
        else:
            step = self.timeouts.step(self.slowest_s)
            self._arm(f"the first step after {name}", 0.0 if not step else max(step, limit))

    def _arm(self, name: str, limit: float) -> None:
        with self._lock:
            self.name, self.limit, self.since = name, limit, self.clock()
        self._changed.set()

    def overrun(self) -> str | None:
        """The message when the current phase has run past its timeout, else None."""
        with self._lock:
            name, limit, since = self.name, self.limit, self.since
        elapsed = self.clock() - since
        if limit <= 0 or elapsed <= limit:
            return None
        return (f"frozen: {name} has taken {elapsed:.0f} s, past its watchdog timeout of "
                f"{limit:.0f} s (dist.*_timeout_s); the stacks of this rank's threads follow")

    def _watch(self) -> None:
        awake = self.clock()
        while not self._stopped.is_set():
            now = self.clock()
            if now - awake > STALL_S and now - awake > self.longest_stall_s:
                self.longest_stall_s = now - awake
                self.stalled(self.longest_stall_s)
            awake = now
            message = self.overrun()
            if message is not None:
                self.fire(message)
                return
            with self._lock:
                left = self.limit - (now - self.since) if self.limit > 0 else STALL_S
            self._changed.wait(timeout=min(max(left, 0.0) + 0.05, STALL_S / 4))
            self._changed.clear()
