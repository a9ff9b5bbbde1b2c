"""The watchdog's timeouts, on a clock the test moves: healthy slow phases (a first step
with torch.compile, a new epoch's first batches, precise BN and a long validation, a
resume that evaluates first) never fire it; a hang in any phase does; and the thread
really fires."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.config import DistConfig
from pipeline.dist.watchdog import Timeouts, Watchdog


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


DEFAULTS = Timeouts.of(DistConfig())  # start-up 1800, step 300, save 1800, validation 1800


def watched(timeouts: Timeouts = DEFAULTS) -> tuple[Watchdog, Clock]:
    clock = Clock()
    dog = Watchdog(timeouts, fire=lambda message: None, clock=clock)
    dog._arm("start-up", timeouts.startup())  # start() without the thread
    return dog, clock


def test_the_defaults_follow_the_collective_timeout():
    assert (DEFAULTS.startup(), DEFAULTS.step(0), DEFAULTS.save()) == (1800, 660, 1800)
    short = Timeouts(startup_s=1, step_s=1, save_s=1, validation_s=1, collective_s=5)
    assert (short.startup(), short.step(0), short.save()) == (10, 10, 10)  # timeout_s + 5
    off = Timeouts(startup_s=0, step_s=0, save_s=0, validation_s=0, collective_s=600)
    assert (off.startup(), off.step(50), off.save(), off.validation(1.0, 10**6)) == (0, 0, 0, 0)
    assert "start-up 1800 s, step 660 s or 10x the slowest step" in DEFAULTS.describe()


def test_a_slow_first_step_and_slow_steps_seen_before_do_not_fire():
    dog, clock = watched()
    clock.now += 1500  # building, resuming, torch.compile and the first batches
    assert dog.overrun() is None
    dog.stepped(images=64)  # the first step: not measured
    assert (dog.name, dog.slowest_s, dog.limit) == ("step", 0.0, 660)
    clock.now += 90  # a healthy slow step (a refill of the loader)
    dog.stepped(images=64)
    assert dog.slowest_s == 90 and dog.limit == 900  # 10 x the slowest seen
    clock.now += 899
    assert dog.overrun() is None
    clock.now += 2
    assert dog.overrun().startswith("frozen: step has taken 901 s, past its watchdog "
                                    "timeout of 900 s")


def test_the_start_up_times_out():
    dog, clock = watched()
    clock.now += 1801
    assert "frozen: start-up has taken 1801 s" in dog.overrun()


def test_saves_and_validation_have_their_own_timeouts_and_the_next_step_too():
    dog, clock = watched()
    dog.stepped(64)
    clock.now += 2.0
    dog.stepped(64)  # 2 s for 64 images: 1/32 s per image
    with dog.phase("save"):
        assert (dog.name, dog.limit) == ("save", 1800)
        clock.now += 1700  # a slow file system, still under the timeout
        assert dog.overrun() is None
    # the step after a save: a step's timeout or the save's, whichever is longer
    assert (dog.name, dog.limit) == ("the first step after save", 1800)
    clock.now += 1000  # a new epoch's first batches after the save
    dog.stepped(64)
    assert dog.slowest_s == 2.0  # the step after another phase is not measured
    # 50,000 val images on one rank at 1/32 s per image (x 10): 15,625 s > 1800
    with dog.phase("validation", images=50_000):
        assert dog.limit == pytest.approx(15_625)
        clock.now += 15_000
        assert dog.overrun() is None
    with dog.phase("save"):
        clock.now += 1801
        assert "frozen: save has taken 1801 s" in dog.overrun()


def test_a_resume_that_validates_first_stays_in_its_start_up():
    dog, clock = watched()
    clock.now += 100
    with dog.phase("validation", images=50_000):
        assert dog.limit == 1800  # nothing measured yet: the start-up's allowance
    assert (dog.name, dog.limit) == ("start-up", 1800)


def test_the_thread_fires_once_a_phase_overruns_and_not_before():
    fired: list[str] = []
    done = threading.Event()

    def fire(message: str) -> None:
        fired.append(message)
        done.set()

    short = Timeouts(startup_s=0.3, step_s=0.3, save_s=0.3, validation_s=0.3, collective_s=0.1)
    dog = Watchdog(short, fire).start()
    for _ in range(5):  # steps every 0.1 s keep it quiet
        done.wait(0.1)
        dog.stepped(1)
    assert not fired
    assert done.wait(5), "the watchdog did not fire"
    assert fired[0].startswith("frozen: step has taken")
    dog.stop()


def test_a_process_stopped_whole_is_noticed_once_it_runs_again():
    offset = [0.0]
    stalls: list[float] = []
    noticed = threading.Event()

    def stalled(seconds: float) -> None:
        stalls.append(seconds)
        noticed.set()

    dog = Watchdog(DEFAULTS, fire=lambda message: None,
                   clock=lambda: time.monotonic() + offset[0], stalled=stalled).start()
    dog.stepped(1)
    assert not noticed.wait(0.3)  # a healthy thread: no gap
    offset[0] += 25.0  # SIGSTOP for 25 s, then SIGCONT: the thread runs again
    dog.stepped(1)
    assert noticed.wait(5)
    assert 25.0 <= stalls[0] < 26.0
    dog.stop()
