"""Progress of long jobs: a tqdm bar on a terminal (and in notebooks), plain periodic lines otherwise (logs, CI).

The ETA is honest from the start when the caller knows that items differ in cost: given ``total_cost`` and a cost
with each update (e.g. measured seconds per item of each layer), the rate is work done per second, not items per
second, so cheap items first do not promise an early end.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm
from tqdm.auto import tqdm as notebook_tqdm


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (tqdm's notebook bar is shown there)."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:  # noqa: BLE001 - no IPython, or an unusual one: no notebook bar
        return False


class Progress:
    """Counts items towards ``total``; ``enabled=False`` keeps quiet. With ``total_cost``, each ``update`` also
    says how much work its items were, and the ETA is (work left) / (work per second so far)."""

    def __init__(self, total: int, description: str, unit: str = "images", enabled: bool = True,
                 initial: int = 0, every_seconds: float = 10.0, total_cost: float | None = None):
        self.total, self.description, self.unit, self.enabled = total, description, unit, enabled
        self.done, self.every = initial, every_seconds
        self.total_cost, self.cost_done = total_cost, 0.0
        self._start = time.perf_counter()
        self._start_done = initial
        self._last_print = self._start
        self._printed = -1
        self._bar = None
        if enabled and (sys.stderr.isatty() or _in_notebook()):
            bar = notebook_tqdm if _in_notebook() else tqdm
            if total_cost is None:
                self._bar = bar(total=total, initial=initial, desc=description, unit=unit.rstrip("s") or "it",
                                 file=sys.stderr, dynamic_ncols=True)
            else:  # the bar and its remaining time follow the work; the items are shown beside it
                self._bar = bar(total=max(total_cost, 1e-9), desc=description, file=sys.stderr, dynamic_ncols=True,
                                 bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
                self._bar.set_postfix_str(f"{initial}/{total} {unit}")

    def update(self, count: int, cost: float | None = None) -> None:
        self.done += count
        if cost is not None:
            self.cost_done += cost
        if self._bar is not None:
            if self.total_cost is None:
                self._bar.update(count)
            else:
                self._bar.set_postfix_str(f"{self.done}/{self.total} {self.unit}", refresh=False)
                self._bar.update(cost or 0.0)
        elif self.enabled and time.perf_counter() - self._last_print >= self.every:
            self._line()

    def eta(self) -> float:
        """Seconds left, from the rate so far (NaN before any progress)."""
        elapsed = time.perf_counter() - self._start
        if self.done >= self.total:
            return 0.0
        if self.total_cost is not None:  # summed costs may pass their total by a rounding error: never below 0
            rate = self.cost_done / elapsed if elapsed > 0 else 0.0
            return max(0.0, self.total_cost - self.cost_done) / rate if rate > 0 else float("nan")
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        return (self.total - self.done) / rate if rate > 0 else float("nan")

    def _line(self) -> None:
        elapsed = time.perf_counter() - self._start
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        eta = self.eta()
        eta_text = "{}m{:02d}s".format(*divmod(int(round(eta)), 60)) if eta == eta else "?"
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
