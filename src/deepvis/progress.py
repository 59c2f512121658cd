"""Progress of long jobs: a tqdm bar on a terminal, plain periodic lines otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts items towards ``total``; ``enabled=False`` keeps quiet."""

    def __init__(self, total: int, description: str, unit: str = "images", enabled: bool = True,
                 initial: int = 0, every_seconds: float = 10.0):
        self.total, self.description, self.unit, self.enabled = total, description, unit, enabled
        self.done, self.every = initial, every_seconds
        self._start = time.perf_counter()
        self._start_done = initial
        self._last_print = self._start
        self._printed = -1
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=description, unit=unit.rstrip("s") or "it",
                             file=sys.stderr, dynamic_ncols=True)

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.enabled and time.perf_counter() - self._last_print >= self.every:
            self._line()

    def _line(self) -> None:
        elapsed = time.perf_counter() - self._start
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = f"{int(eta // 60)}m{int(eta % 60):02d}s" if eta == eta else "?"
        speed = f"{rate:.1f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{rate * 60:.1f} {self.unit}/min"
        print(f"{self.description}: {self.done}/{self.total} {self.unit}, {speed}, ETA {eta_text}",
              file=sys.stderr, flush=True)
        self._last_print = time.perf_counter()
        self._printed = self.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self._printed != self.done:
            self._line()
