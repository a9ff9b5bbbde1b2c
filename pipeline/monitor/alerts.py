"""When a run needs a person: the rules, each a pure function of the logged numbers.

    rules = AlertRules(cfg.log)
    for alert in rules.check(record, spread):   # after each train log point
        tracker.alert(alert)                    # a warning line, and wandb.alert
    tracker.alert(diverged(step, checkpoint))   # the NaN/Inf stop

- Throughput: images/s below log.alert_throughput_fraction of the running median of
  this session's earlier intervals (the first interval, start-up, is left out; five
  intervals are needed before the rule speaks).
- A stalled loader: one rank's data wait per step above log.alert_data_wait_factor x the
  median of the other ranks' (not of all: on 2 ranks that median is the mean, which no
  rank exceeds twofold), and above 5% of the step, for log.alert_data_wait_intervals intervals
  in a row, naming the rank and its host.
W&B throttles a repeated title by its wait (log.alert_every_s); the log line repeats.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from pipeline.config import LogConfig
from pipeline.monitor.meter import RankSpread

MIN_HISTORY = 5  # intervals before the throughput rule judges
WAIT_FLOOR = 0.05  # of the step time: a rank waiting less is not a stall, whatever the ratio


@dataclass(frozen=True)
class Alert:
    title: str  # W&B throttles by title: one per kind of trouble
    text: str
    level: str = "WARN"  # wandb.AlertLevel name: INFO | WARN | ERROR


class AlertRules:
    def __init__(self, cfg: LogConfig):
        self.cfg = cfg
        self.throughput: list[float] = []
        self.intervals_seen = 0
        self.stalled: tuple[int, int] | None = None  # (rank, intervals in a row)

    def check(self, record: dict, spread: RankSpread) -> list[Alert]:
        alerts = [self._throughput(record), self._stall(record, spread)]
        return [a for a in alerts if a is not None]

    def _throughput(self, record: dict) -> Alert | None:
        self.intervals_seen += 1
        if self.intervals_seen == 1 or self.cfg.alert_throughput_fraction <= 0:
            return None
        now = record["images_per_s"]
        history, self.throughput = self.throughput, [*self.throughput, now]
        if len(history) < MIN_HISTORY:
            return None
        median = statistics.median(history)
        if now >= self.cfg.alert_throughput_fraction * median:
            return None
        return Alert("throughput dropped",
                     f"step {record['step']}: {now:,.0f} img/s, below "
                     f"{self.cfg.alert_throughput_fraction:g} x this session's median "
                     f"{median:,.0f} img/s; slowest rank {record['ranks/slowest']} on "
                     f"{record['ranks/slowest_host']}")

    def _stall(self, record: dict, spread: RankSpread) -> Alert | None:
        waits = spread.data_wait_s
        if len(waits) < 2 or self.cfg.alert_data_wait_factor <= 0:
            return None
        rank = max(range(len(waits)), key=waits.__getitem__)
        median = statistics.median(waits[:rank] + waits[rank + 1:])
        high = (waits[rank] > self.cfg.alert_data_wait_factor * median
                and waits[rank] > WAIT_FLOOR * spread.step_time_s[rank])
        if not high:
            self.stalled = None
            return None
        same = self.stalled is not None and self.stalled[0] == rank
        self.stalled = (rank, self.stalled[1] + 1 if same else 1)
        if self.stalled[1] < self.cfg.alert_data_wait_intervals:
            return None
        return Alert("a rank waits for data",
                     f"step {record['step']}: rank {rank} on {record['ranks/slowest_host']} "
                     f"waited {waits[rank]:.3g} s per step for data ({self.stalled[1]} log "
                     f"intervals in a row), the other ranks' median {median:.3g} s: its loader or "
                     "its node's storage is slow, and every other rank waits for it")


def diverged(step: int, checkpoint: str) -> Alert:
    return Alert("loss is NaN/Inf", f"training stopped at step {step}; the last good "
                 f"checkpoint is {checkpoint}", "ERROR")
