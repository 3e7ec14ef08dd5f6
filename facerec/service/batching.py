"""Micro-batching: items of requests that arrive together go through one model call.

Used twice per worker: photos -> MTCNN (detection) and face crops -> the embedder.

The first request of a batch waits up to ``max_wait_s`` for others (or until
``max_batch`` items are queued); while a batch is being processed, new requests queue
up and form the next one, so under load batches grow by themselves. The model call
runs in its own thread (``executor``): the event loop never blocks. ``max_batch=1``
processes each request on its own (the baseline the benchmark compares against).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any


class MicroBatcher:
    def __init__(
        self,
        process: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        self._process_items = process
        self._executor = executor
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self._observe = observe
        self._pending: list[tuple[list[Any], asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="facerec-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()

    async def run(self, items: Sequence[Any]) -> Sequence[Any]:
        """``process(items)`` (one result per item, e.g. an (N, D) array), computed with whatever else is queued."""
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((list(items), future))
        self._arrived.set()
        return await future

    def _queued(self) -> int:
        return sum(len(items) for items, _ in self._pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            deadline = loop.time() + self.max_wait_s
            while self._queued() < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:  # woken by each arrival; a lost wake-up is harmless (the requests are in _pending)
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not self._pending:
                self._arrived.clear()
            if batch:
                await self._process(loop, batch)

    def _take(self) -> list[tuple[list[Any], asyncio.Future]]:
        """Requests (whole, in arrival order) up to ``max_batch`` items; at least one. Drops abandoned ones."""
        batch, count = [], 0
        while self._pending and (not batch or count + len(self._pending[0][0]) <= self.max_batch):
            items, future = self._pending.pop(0)
            if not future.done():  # a request that timed out or disconnected is not processed
                batch.append((items, future))
                count += len(items)
        return batch

    async def _process(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[list[Any], asyncio.Future]]) -> None:
        items = [item for request, _ in batch for item in request]
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._process_items, items)
        except Exception as exc:  # the error belongs to these requests; the loop goes on
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if self._observe is not None:
            self._observe(len(items), time.perf_counter() - start)
        offset = 0
        for request, future in batch:
            if not future.done():
                future.set_result(results[offset : offset + len(request)])
            offset += len(request)
