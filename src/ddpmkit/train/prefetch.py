"""Fetch the next steps' batches in one background thread, so a training step does not wait on its data.

What is fetched is a pure function of the step (the images of `BatchOrder.indices(step)`), so reading it early
changes no random draw: the flips, t and noise of a step are still drawn in the step from (seed, step), and a
resumed run or N processes see exactly what one uninterrupted process sees. One worker thread runs the fetches in
submission order and is the only caller of `fetch`, so `fetch` needs no locking. Copying from a memory map or the
page cache releases the GIL (numpy's copy loop), so the thread overlaps with the step's forward and backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """`get(step)` returns `fetch(step)`, with steps step+1 .. step+depth already being fetched (depth 0: inline)."""

    def __init__(self, fetch: Callable[[int], T], depth: int = 2, end: int | None = None):
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self.fetch, self.depth, self.end = fetch, depth, end
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[int, Future] = {}

    def get(self, step: int) -> T:
        if self.depth == 0:
            return self.fetch(step)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="ddpmkit-prefetch")
        for stale in [s for s in self._pending if s < step or s > step + self.depth]:  # after a jump in steps
            self._pending.pop(stale).cancel()
        future = self._pending.pop(step, None) or self._pool.submit(self.fetch, step)
        for ahead in range(step + 1, step + 1 + self.depth):
            if ahead not in self._pending and (self.end is None or ahead < self.end):
                self._pending[ahead] = self._pool.submit(self.fetch, ahead)
        return future.result()

    def close(self) -> None:
        """Drop what was fetched ahead and stop the thread."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
