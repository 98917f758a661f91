"""Dynamic batching on the event loop: requests queue, a batch forms up to a maximum number of samples
or until its first request has waited the maximum delay, runs as one back-end call on a worker
thread, and each request gets its own rows back.

Batching off skips the scheduler: each request waits for a free worker and runs alone, with the
same queue-time, compute-time and batch-size accounting.

A back end whose calls take less than ``inline_below_s`` (a running mean of the last ones) is called on the
event loop itself: handing a call of tens of microseconds to a worker thread and back (a queue, a wake-up, a
future, the loop's self-pipe) costs more CPU than the call. A slower one goes back to the workers, so that
the loop keeps answering while it computes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 1  # samples per back-end call; 1: batching off
    max_delay_s: float = 0.0  # how long the first request of a batch waits for others
    concurrent_batches: int = 1  # back-end calls running at once (worker threads)
    inline_below_s: float = 0.0  # calls shorter than this (running mean) run on the event loop; 0: never

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


COMPUTE_MEAN_WEIGHT = 0.1  # of the newest call in the running mean of compute time


def runs_inline(mean_compute_s: float, policy: BatchPolicy) -> bool:
    """Whether the next back-end call runs on the event loop (see the module's docstring)."""
    return mean_compute_s < policy.inline_below_s


def updated_mean(mean_s: float, seconds: float) -> float:
    """The running mean of compute time after one more call (the first call sets it)."""
    return seconds if mean_s == float("inf") else mean_s + COMPUTE_MEAN_WEIGHT * (seconds - mean_s)


@dataclass
class Batch:
    """What one back-end call did: for the metrics and the pacing."""

    samples: int
    queue_seconds: list[float]
    compute_seconds: float
    started: float  # perf_counter when the back end got it
    device_done: float | None = None  # perf_counter when a paced, modelled device has its output


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    enqueued: float


def take_batch(pending: deque, max_samples: int) -> list:
    """The requests at the head of the queue whose samples fit ``max_samples``; at least one, so a
    request larger than the limit runs alone rather than waiting forever."""
    taken = [pending.popleft()]
    total = len(taken[0].x)
    while pending and total + len(pending[0].x) <= max_samples:
        total += len(pending[0].x)
        taken.append(pending.popleft())
    return taken


class Batcher:
    """Runs ``compute`` (a batch of rows in, a batch of rows out) on ``executor`` for queued requests."""

    def __init__(self, compute: Callable[[np.ndarray], np.ndarray], policy: BatchPolicy, executor: Executor,
                 on_batch: Callable[[Batch], None] | None = None):
        self._compute, self.policy, self._executor, self._on_batch = compute, policy, executor, on_batch
        self._pending: deque[_Pending] = deque()
        self._queued_samples = 0
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self.mean_compute_s = float("inf")  # running mean of the back end's call time: none measured yet

    def start(self) -> None:
        """Begin scheduling on the running event loop."""
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.policy.concurrent_batches)
        self._loop_task = asyncio.get_running_loop().create_task(self._schedule(), name="batcher")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await asyncio.gather(*self._running, return_exceptions=True)

    async def submit(self, x: np.ndarray) -> tuple[np.ndarray, Batch]:
        """Queue one request's rows; returns its output rows and the batch that computed them."""
        assert self._wakeup is not None, "Batcher.start() was not called"
        if not self.policy.enabled:  # each request its own call: straight to a free worker
            return await self._run_alone(x, time.perf_counter())
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(x, future, time.perf_counter()))
        self._queued_samples += len(x)
        self._wakeup.set()
        return await future

    async def _schedule(self) -> None:
        policy = self.policy
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0].enqueued + policy.max_delay_s
            while policy.enabled and self._queued_samples < policy.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            await self._slots.acquire()
            items = take_batch(self._pending, policy.max_batch_size)
            self._queued_samples -= sum(len(item.x) for item in items)
            task = asyncio.get_running_loop().create_task(self._run(items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _compute_batch(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """One back-end call, on the loop or on a worker (runs_inline); its output and seconds."""
        if runs_inline(self.mean_compute_s, self.policy):
            y, seconds = self._timed_compute(x)
        else:
            y, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, self._timed_compute, x)
        self.mean_compute_s = updated_mean(self.mean_compute_s, seconds)
        return y, seconds

    async def _run_alone(self, x: np.ndarray, enqueued: float) -> tuple[np.ndarray, Batch]:
        async with self._slots:
            started = time.perf_counter()
            y, seconds = await self._compute_batch(x)
        batch = Batch(len(x), [started - enqueued], seconds, started)
        if self._on_batch is not None:
            self._on_batch(batch)
        return y, batch

    async def _run(self, items: list[_Pending]) -> None:
        try:
            started = time.perf_counter()
            x = items[0].x if len(items) == 1 else np.concatenate([item.x for item in items])
            try:
                y = await self._compute_batch(x)
            except Exception as exc:  # every request of the batch learns why
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            outputs, seconds = y
            batch = Batch(len(x), [started - item.enqueued for item in items], seconds, started)
            if self._on_batch is not None:
                self._on_batch(batch)
            offset = 0
            for item in items:
                n = len(item.x)
                if not item.future.done():  # a cancelled caller (client gone) is skipped
                    item.future.set_result((outputs[offset: offset + n], batch))
                offset += n
        finally:
            self._slots.release()

    def _timed_compute(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        y = self._compute(x)
        return y, time.perf_counter() - started
