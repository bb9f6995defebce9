"""Adaptive batching: concurrent requests coalesced into one model call.

Requests wait in a bounded queue. One asyncio task, the batcher, takes the first waiting request
and adds more until the batch holds ``max_batch_rows`` rows, ``max_wait_ms`` have passed, or no
other request is on its way (none queued, none being read): so a lone client never waits for
company, and under load every model call carries what arrived while the previous one ran. A
batch is scored by one ``score`` call in a worker thread (the event loop keeps accepting
requests meanwhile), which concatenates the requests, calls the model once and splits the answer
back. When a batch fails, each of its requests is scored alone, so one request's error never
fails the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deepspark.serving.metrics import ServerMetrics
from deepspark.serving.protocol import RequestError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Pending:
    item: Any
    future: asyncio.Future


class Batcher:
    """Queue, coalesce and score requests; ``await submit(item)`` gives that item's answer.

    Args:
        score: ``items -> one answer per item`` (an exception instance for an item that
            failed on its own), run in the worker thread; ``len(item)`` is its rows.
        batch_key: Items batch together only when their keys are equal (e.g. their columns).
        max_batch_rows: Most rows per model call (a larger request is scored alone).
        max_wait_ms: Longest the first request of a batch waits for others.
        max_queue: Most requests waiting; ``submit`` refuses more with 503.
        metrics: Where batch sizes and the queue length are counted.
    """

    def __init__(
        self,
        score: Callable[[Sequence[Any]], list[Any]],
        *,
        batch_key: Callable[[Any], Hashable] = lambda item: None,
        max_batch_rows: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: ServerMetrics,
    ):
        self.score = score
        self.batch_key = batch_key
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.metrics = metrics
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._carried: _Pending | None = None
        self._arriving = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="deepspark-predict")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batcher task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Score what is still queued, then stop the task and the worker thread."""
        while (
            self._task is not None
            and not self._task.done()
            and (self._queue.qsize() or self._carried is not None)
        ):
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Marks a request being read: the batcher waits for it (up to ``max_wait_ms``)."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, item: Any, *, timeout_s: float) -> Any:
        """Queue ``item`` and wait for its answer.

        Raises:
            RequestError: 503 when the queue is full, 504 after ``timeout_s``, or the
                request's own error (400).
        """
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(item, future))
        except asyncio.QueueFull:
            raise RequestError(
                f"The server is busy: {self._queue.maxsize} requests are waiting; retry "
                f"shortly. Received: queue_length={self._queue.qsize()}",
                status=503,
                error_code="TEMPORARILY_UNAVAILABLE",
                headers={"Retry-After": "1"},
            ) from None
        self.metrics.queue_length = self._queue.qsize()
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            future.cancel()
            raise RequestError(
                f"No prediction within {timeout_s:g} s; the server is overloaded or the "
                f"request too large. Received: timeout_s={timeout_s:g}",
                status=504,
                error_code="DEADLINE_EXCEEDED",
            ) from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.metrics.queue_length = self._queue.qsize()
            batch = [pending for pending in batch if not pending.future.done()]
            if not batch:
                continue
            items = [pending.item for pending in batch]
            try:
                answers = await loop.run_in_executor(self._executor, self._score, items)
            except Exception as error:  # noqa: BLE001  answered per request, never lost
                logger.exception("batch failed")
                answers = [error] * len(batch)
            for pending, answer in zip(batch, answers, strict=True):
                if pending.future.done():
                    continue
                if isinstance(answer, BaseException):
                    pending.future.set_exception(answer)
                else:
                    pending.future.set_result(answer)

    async def _gather(self) -> list[_Pending]:
        first = self._carried or await self._queue.get()
        self._carried = None
        batch, rows, key = [first], len(first.item), self.batch_key(first.item)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch_rows:
            pending = await self._next(deadline)
            if pending is None:
                break
            size = len(pending.item)
            if rows + size > self.max_batch_rows or self.batch_key(pending.item) != key:
                self._carried = pending
                break
            batch.append(pending)
            rows += size
        return batch

    async def _next(self, deadline: float) -> _Pending | None:
        await asyncio.sleep(0)  # let requests already received reach the queue
        if not self._queue.empty():
            return self._queue.get_nowait()
        remaining = deadline - time.monotonic()
        if self._arriving == 0 or remaining <= 0:
            return None
        try:
            async with asyncio.timeout(remaining):
                return await self._queue.get()
        except TimeoutError:
            return None

    def _score(self, items: list[Any]) -> list[Any]:
        """Answers per item (an exception for a failed one); runs in the worker thread."""
        self.metrics.batch_done(sum(len(item) for item in items), len(items))
        try:
            return self.score(items)
        except Exception as error:  # noqa: BLE001  isolate the item at fault
            if len(items) == 1:
                return [error]
        return [self._score_alone(item) for item in items]

    def _score_alone(self, item: Any) -> Any:
        try:
            return self.score([item])[0]
        except Exception as error:  # noqa: BLE001  the item's own answer
            return error
