"""The one thread that runs torch for the live toolbox.

Once a second OS thread has run torch operations in a process, every torch call in it runs about twice as slowly
on a small machine, and stays so (each calling thread gets its own team of OpenMP workers, and the teams contend
for the cores). Starlette's thread pool hands successive requests to different worker threads, so the server
sends all model work -- loading the model and building its catalog included -- to one dedicated thread, and the
request handlers await it. Requests are served in the order they arrive, one at a time, as the model is used.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class Compute:
    """A single worker thread: :meth:`run` from synchronous code (start-up), ``await compute(fn, ...)`` from
    request handlers."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepvis-torch")
        self.thread_id: int | None = self._executor.submit(threading.get_ident).result()

    def run(self, fn: Callable[..., T], *args) -> T:
        """Run ``fn(*args)`` on the compute thread and wait for it."""
        return self._executor.submit(fn, *args).result()

    async def __call__(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
