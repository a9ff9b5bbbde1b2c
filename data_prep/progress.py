"""How far a split is, for the person watching: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself with carriage returns, which a captured log glues to the next line.
So when stderr is no terminal there is no bar, but a plain line every PLAIN_EVERY seconds
and one at the end. Rejects and warnings go to stdout as whole lines, naming the file.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

PLAIN_EVERY = 30.0  # seconds between progress lines in a log


class Progress:
    """Images done (rate and ETA) for one split; prints each reject as it is found."""

    def __init__(self, split: str, total: int):
        self.split, self.total, self.done, self.rejected = split, total, 0, 0
        self.started = self.last_line = time.monotonic()
        self.bar = (tqdm(total=total, unit="img", desc=split, dynamic_ncols=True)
                    if sys.stderr.isatty() else None)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.bar is not None:
            self.bar.close()
        else:
            self._plain_line()

    def report(self, rejected: list[dict], warned: list[dict] = ()) -> None:
        for reject in rejected:
            self._say(f"rejected {reject['source']}: {reject['reason']}")
        for note in warned:
            self._say(f"warning {note['source']}: {note['warning']}")
        self.rejected += len(rejected)

    def shard_done(self, spec, record: dict) -> None:
        self.report(record["rejected"], record.get("warnings", []))
        self.done += len(spec.items)
        if self.bar is not None:
            self.bar.set_postfix(rejected=self.rejected, refresh=False)
            self.bar.update(len(spec.items))
        elif time.monotonic() - self.last_line >= PLAIN_EVERY:
            self._plain_line()

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)  # above the bar, which is drawn again below it
        else:
            print(line, flush=True)

    def _plain_line(self) -> None:
        self.last_line = now = time.monotonic()
        rate = self.done / max(now - self.started, 1e-9)
        print(f"{self.split}: {self.done}/{self.total} images, {self.rejected} rejected, "
              f"{rate:.0f} img/s", file=sys.stderr, flush=True)
