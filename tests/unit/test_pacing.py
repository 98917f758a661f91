"""Pacing: answers wait for one modelled device whose pipeline takes a sample every II and has a
fixed latency, as the fpga server does with --pace."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from fpgaflow.preprocess import Scaler
from fpgaflow_inference.pacing import DevicePacer

LATENCY, II = 1e-6, 1e-7


def test_a_batch_at_an_idle_device_finishes_latency_plus_n_minus_one_iis_later():
    pacer = DevicePacer(LATENCY, II)
    assert pacer.reserve(10.0, 1) == pytest.approx(10.0 + LATENCY, abs=1e-12)
    pacer = DevicePacer(LATENCY, II)
    assert pacer.reserve(10.0, 5) == pytest.approx(10.0 + LATENCY + 4 * II, abs=1e-12)
    assert pacer.free_at == pytest.approx(10.0 + 5 * II, abs=1e-12)  # takes new input after its 5 samples


def test_back_to_back_batches_queue_behind_the_pipeline():
    pacer = DevicePacer(LATENCY, II)
    first = pacer.reserve(10.0, 5)
    second = pacer.reserve(10.0, 3)  # arrives at once: starts when the pipeline has taken the first 5
    assert second == pytest.approx(10.0 + 5 * II + LATENCY + 2 * II, abs=1e-12)
    assert second - first == pytest.approx(3 * II, abs=1e-12)  # the pipeline overlaps them: not a whole latency later
    assert pacer.free_at == pytest.approx(10.0 + 8 * II, abs=1e-12)


def test_an_arrival_after_the_device_is_free_starts_at_its_arrival():
    pacer = DevicePacer(LATENCY, II)
    pacer.reserve(10.0, 5)
    assert pacer.reserve(20.0, 3) == pytest.approx(20.0 + LATENCY + 2 * II, abs=1e-12)
    # free to take input (after 5 IIs) but still computing the first batch: no wait either
    pacer = DevicePacer(LATENCY, II)
    first = pacer.reserve(10.0, 5)
    arrival = 10.0 + 6 * II
    assert arrival < first
    assert pacer.reserve(arrival, 1) == pytest.approx(arrival + LATENCY, abs=1e-12)


class FakeBackend:
    """A back end that answers at once: the pacer alone decides how long an answer takes."""

    target = "fpga"
    description = "fake device"

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([x.sum(axis=1), -x.sum(axis=1)], axis=1).astype(np.float32)

    def device_seconds(self, n: int) -> float | None:
        return None


def timed_predictions(pacer: DevicePacer | None, requests: int) -> tuple[float, list[np.ndarray]]:
    """Seconds until ``requests`` concurrent one-sample predictions are all answered, and the answers."""
    from fpgaflow_inference.model import ServedModel  # imports TensorFlow: only in the tests that need it

    scaler = Scaler(("a", "b", "c"), np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    model = ServedModel("m", 1, scaler, ("yes", "no"), FakeBackend(), pacer=pacer)

    async def main():
        model.start()
        try:
            started = time.perf_counter()
            answers = await asyncio.gather(*(model.predict(np.array([[3.0, 4.0, 5.0 + i]])) for i in range(requests)))
            return time.perf_counter() - started, answers
        finally:
            await model.stop()

    return asyncio.run(main())


def test_a_paced_model_answers_after_the_device_latency():
    elapsed, [y] = timed_predictions(DevicePacer(0.05, 0.02), 1)
    assert elapsed >= 0.05
    np.testing.assert_allclose(y, [[3.0, -3.0]])  # scaled: (3-1)/2 + (4-2)/2 + (5-3)/2


def test_paced_requests_queue_behind_each_other_on_the_one_device():
    elapsed, answers = timed_predictions(DevicePacer(0.05, 0.02), 3)
    assert elapsed >= 0.05 + 2 * 0.02  # the third sample entered the pipeline two IIs after the first
    assert [float(y[0, 0]) for y in answers] == [3.0, 3.5, 4.0]


def test_an_unpaced_model_answers_without_waiting():
    elapsed, [y] = timed_predictions(None, 1)
    assert elapsed < 0.04
    np.testing.assert_allclose(y, [[3.0, -3.0]])
