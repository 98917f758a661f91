"""Dynamic batching: requests gathered into back-end calls of at most max_batch_size samples, each
caller getting its own rows back, on a plain numpy compute function and a thread pool."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from fpgaflow_inference.batching import Batch, Batcher, BatchPolicy, take_batch

FEATURES = 3


class Doubler:
    """A back end that doubles its input, records every batch size it got and how many calls ran at
    once, and sleeps a little per call so that requests pile up meanwhile."""

    def __init__(self, sleep: float = 0.01):
        self.sleep = sleep
        self.sizes: list[int] = []
        self.running = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self.sizes.append(len(x))
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.sleep)
            if (x < 0).any():
                raise ValueError("negative input")
            return x * 2
        finally:
            with self._lock:
                self.running -= 1


def rows(caller: int, n: int) -> np.ndarray:
    """n rows whose every value names the caller."""
    return np.full((n, FEATURES), caller, dtype=np.float32)


def serve(policy: BatchPolicy, compute, body, workers: int | None = None):
    """Runs ``body(batcher)`` on a started batcher; returns its result and the batches it recorded."""

    async def main():
        batches: list[Batch] = []
        with ThreadPoolExecutor(max_workers=workers or policy.concurrent_batches) as pool:
            batcher = Batcher(compute, policy, pool, batches.append)
            batcher.start()
            try:
                return await body(batcher), batches
            finally:
                await batcher.stop()

    return asyncio.run(main())


def test_take_batch_takes_the_head_of_the_queue_up_to_the_limit_in_order():
    queue = deque(SimpleNamespace(x=np.zeros((n, 1))) for n in (2, 2, 3, 1, 9, 1))
    taken = []
    while queue:
        taken.append([len(item.x) for item in take_batch(queue, 4)])
    # first come first served: the 1 after the 3 is not pulled forward; 9 > 4 runs alone
    assert taken == [[2, 2], [3, 1], [9], [1]]


def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_rows():
    compute = Doubler(sleep=0.005)
    policy = BatchPolicy(max_batch_size=8, max_delay_s=0.02, concurrent_batches=2)
    sizes = {caller: 1 + caller % 3 for caller in range(60)}

    async def one(batcher, caller):
        await asyncio.sleep((caller % 7) * 0.001)  # arrivals spread over a few milliseconds
        return await batcher.submit(rows(caller, sizes[caller]))

    async def body(batcher):
        return await asyncio.gather(*(one(batcher, caller) for caller in sizes))

    answers, batches = serve(policy, compute, body)
    for caller, (y, batch) in enumerate(answers):
        np.testing.assert_array_equal(y, rows(caller, sizes[caller]) * 2)
        assert batch in batches
    assert sum(compute.sizes) == sum(b.samples for b in batches) == sum(sizes.values())
    assert max(compute.sizes) <= 8
    assert len(compute.sizes) <= len(sizes) // 3, f"requests were not gathered: {compute.sizes}"


def test_simultaneous_requests_fill_batches_to_the_limit():
    compute = Doubler()
    policy = BatchPolicy(max_batch_size=8, max_delay_s=0.05)
    sizes = [1 + caller % 3 for caller in range(30)]

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(rows(c, n)) for c, n in enumerate(sizes)))

    answers, _ = serve(policy, compute, body)
    assert [len(y) for y, _ in answers] == sizes
    # first come first served packing leaves at most (largest request - 1) samples unused
    assert all(6 <= n <= 8 for n in compute.sizes[:-1]), compute.sizes
    assert sum(compute.sizes) == sum(sizes)


def test_a_lone_request_is_dispatched_after_the_maximum_delay():
    compute = Doubler(sleep=0)
    policy = BatchPolicy(max_batch_size=8, max_delay_s=0.1)

    async def body(batcher):
        started = time.perf_counter()
        y, batch = await batcher.submit(rows(7, 2))
        return y, batch, time.perf_counter() - started

    (y, batch, elapsed), _ = serve(policy, compute, body)
    np.testing.assert_array_equal(y, rows(7, 2) * 2)
    assert batch.samples == 2 and compute.sizes == [2]
    assert 0.1 - 1e-3 <= batch.queue_seconds[0] < 0.1 + 0.05
    assert 0.1 - 1e-3 <= elapsed < 0.1 + 0.08


def test_a_full_batch_does_not_wait_for_the_delay():
    compute = Doubler(sleep=0)
    policy = BatchPolicy(max_batch_size=4, max_delay_s=5.0)

    async def body(batcher):
        started = time.perf_counter()
        await asyncio.gather(batcher.submit(rows(1, 3)), batcher.submit(rows(2, 1)))
        return time.perf_counter() - started

    elapsed, batches = serve(policy, compute, body)
    assert elapsed < 1.0
    assert [b.samples for b in batches] == [4]


def test_batching_off_runs_each_request_as_its_own_call():
    compute = Doubler(sleep=0.002)
    policy = BatchPolicy(max_batch_size=1, max_delay_s=0.0)
    sizes = [1, 1, 3, 1, 2, 1, 1, 1]

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(rows(c, n)) for c, n in enumerate(sizes)))

    answers, batches = serve(policy, compute, body)
    assert not policy.enabled
    assert compute.sizes == sizes  # one call per request, in arrival order, multi-row requests whole
    assert [b.samples for b in batches] == sizes
    for caller, (y, batch) in enumerate(answers):
        np.testing.assert_array_equal(y, rows(caller, sizes[caller]) * 2)
        assert batch.samples == sizes[caller]


def test_a_request_larger_than_the_maximum_runs_alone():
    compute = Doubler()
    policy = BatchPolicy(max_batch_size=4, max_delay_s=0.02)

    async def body(batcher):
        return await asyncio.gather(batcher.submit(rows(1, 1)), batcher.submit(rows(2, 10)), batcher.submit(rows(3, 1)))

    answers, _ = serve(policy, compute, body)
    assert compute.sizes == [1, 10, 1]
    for caller, n, (y, batch) in zip((1, 2, 3), (1, 10, 1), answers, strict=True):
        np.testing.assert_array_equal(y, rows(caller, n) * 2)
        assert batch.samples == n


def test_an_error_in_compute_reaches_every_caller_of_its_batch_and_serving_goes_on():
    compute = Doubler()
    policy = BatchPolicy(max_batch_size=8, max_delay_s=0.05)

    async def body(batcher):
        failed = await asyncio.gather(batcher.submit(rows(1, 2)), batcher.submit(rows(-1, 1)), batcher.submit(rows(3, 2)),
                                      return_exceptions=True)
        later = await batcher.submit(rows(4, 3))
        return failed, later

    (failed, (later, _)), batches = serve(policy, compute, body)
    assert compute.sizes == [5, 3]  # the poisoned request shared one call with two good ones
    assert all(isinstance(exc, ValueError) and str(exc) == "negative input" for exc in failed)
    np.testing.assert_array_equal(later, rows(4, 3) * 2)
    assert [b.samples for b in batches] == [3]  # a failed call records no batch


@pytest.mark.parametrize("cancel_after", [0.01, 0.08], ids=["while-queued", "while-computing"])
def test_a_cancelled_caller_does_not_break_the_others(cancel_after):
    compute = Doubler(sleep=0.1)
    policy = BatchPolicy(max_batch_size=8, max_delay_s=0.05)

    async def body(batcher):
        tasks = [asyncio.create_task(batcher.submit(rows(c, 2))) for c in range(4)]
        await asyncio.sleep(cancel_after)
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        after = await batcher.submit(rows(9, 1))
        return results, after

    (results, (after, _)), _ = serve(policy, compute, body)
    assert isinstance(results[1], asyncio.CancelledError)
    for caller in (0, 2, 3):
        np.testing.assert_array_equal(results[caller][0], rows(caller, 2) * 2)
    np.testing.assert_array_equal(after, rows(9, 1) * 2)


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrent_batches_limits_the_calls_running_at_once(limit):
    compute = Doubler(sleep=0.03)
    policy = BatchPolicy(max_batch_size=1, concurrent_batches=limit)

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(rows(c, 1)) for c in range(9)))

    answers, _ = serve(policy, compute, body, workers=8)  # the pool would allow 8: the batcher limits
    assert compute.peak == limit
    assert len(answers) == 9 and len(compute.sizes) == 9


def test_the_batch_record_has_queue_and_compute_times_and_samples():
    compute = Doubler(sleep=0.05)
    policy = BatchPolicy(max_batch_size=16, max_delay_s=0.06)

    async def body(batcher):
        t0 = time.perf_counter()
        first = asyncio.create_task(batcher.submit(rows(1, 2)))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(batcher.submit(rows(2, 3)))
        return t0, await first, await second

    (t0, (y1, batch1), (y2, batch2)), batches = serve(policy, compute, body)
    assert batch1 is batch2 and batches == [batch1]
    np.testing.assert_array_equal(y1, rows(1, 2) * 2)
    np.testing.assert_array_equal(y2, rows(2, 3) * 2)
    assert batch1.samples == 5
    first_wait, second_wait = batch1.queue_seconds
    assert 0.06 - 1e-3 <= first_wait < 0.06 + 0.04  # the first request waited the whole delay
    assert first_wait - 0.06 < second_wait < first_wait - 0.015  # the second came 20 ms (and a bit) later
    assert 0.05 <= batch1.compute_seconds < 0.05 + 0.04
    assert batch1.started - t0 == pytest.approx(first_wait, abs=0.005)
    assert batch1.device_done is None


@pytest.mark.parametrize("batching", [False, True])
def test_a_fast_back_end_runs_on_the_event_loop_and_a_slow_one_on_the_workers(batching):
    """After its first call (on a worker, timed), a back end faster than inline_below_s is called on the event
    loop's own thread; one slower than that stays on the worker threads."""

    def thread_of(sleep: float):
        def compute(x):
            if sleep:
                time.sleep(sleep)
            threads.append(threading.get_ident())
            return x * 2

        threads: list[int] = []
        policy = BatchPolicy(max_batch_size=4 if batching else 1, max_delay_s=0.001, inline_below_s=0.005)

        async def body(batcher):
            loop_thread = threading.get_ident()
            for n in range(4):
                y, _ = await batcher.submit(rows(n, 1))
                np.testing.assert_array_equal(y, rows(n, 1) * 2)
            return loop_thread, batcher.mean_compute_s

        (loop_thread, mean), _ = serve(policy, compute, body)
        return [t == loop_thread for t in threads], mean

    on_loop, mean = thread_of(0.0)
    assert on_loop == [False, True, True, True] and mean < 0.005
    on_loop, mean = thread_of(0.01)
    assert on_loop == [False, False, False, False] and mean >= 0.01
    assert BatchPolicy().inline_below_s == 0, "off unless the server asks for it"
