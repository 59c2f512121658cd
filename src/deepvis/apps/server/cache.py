"""A least-recently-used cache bounded in items and bytes, safe to share between the server's threads."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LRU(OrderedDict):
    """Keeps at most ``max_items`` values (and, optionally, ``max_bytes`` of their declared sizes); the least
    recently fetched go first."""

    def __init__(self, max_items: int, max_bytes: int | None = None):
        super().__init__()
        self.max_items, self.max_bytes, self.bytes = max_items, max_bytes, 0
        self._guard = threading.RLock()

    def put(self, key, value, nbytes: int = 0) -> None:
        with self._guard:
            if key in self:
                self.bytes -= super().pop(key)[1]
            super().__setitem__(key, (value, nbytes))
            self.bytes += nbytes
            while len(self) > self.max_items or (self.max_bytes and self.bytes > self.max_bytes and len(self) > 1):
                _, (_, size) = self.popitem(last=False)
                self.bytes -= size

    def fetch(self, key):
        """The value under ``key`` (now the most recent), or None."""
        with self._guard:
            if key not in self:
                return None
            self.move_to_end(key)
            return super().__getitem__(key)[0]

    def drop(self, key) -> None:
        with self._guard:
            if key in self:
                self.bytes -= super().pop(key)[1]
