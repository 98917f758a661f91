"""Per-model counts and time spent since the server started, as Triton's ModelStatistics reports them:
requests answered and failed, the samples they carried, back-end calls, and the nanoseconds of each
phase of an answered request. Kept on the event loop, so plain integers suffice."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """How many times something happened and the nanoseconds it took, summed."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += max(round(seconds * 1e9), 0)


@dataclass
class ModelStats:
    success: Duration = field(default_factory=Duration)  # whole request, from arrival at the model to its answer
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)  # waiting for its batch to start computing
    compute_input: Duration = field(default_factory=Duration)  # validation and scaling
    compute_infer: Duration = field(default_factory=Duration)  # the back-end call of its batch
    compute_output: Duration = field(default_factory=Duration)  # from the end of that call to the answer (pacing included)
    inference_count: int = 0  # samples of the answered requests
    execution_count: int = 0  # back-end calls
    last_inference_ms: int = 0  # wall clock, milliseconds since the Unix epoch, of the latest request answered or failed

    def answered(self, samples: int, total: float, queue: float, compute_input: float, compute_infer: float,
                 compute_output: float) -> None:
        """One request answered: its samples and the seconds of each phase."""
        self.success.add(total)
        self.queue.add(queue)
        self.compute_input.add(compute_input)
        self.compute_infer.add(compute_infer)
        self.compute_output.add(compute_output)
        self.inference_count += samples
        self.last_inference_ms = time.time_ns() // 1_000_000

    def failed(self, total: float) -> None:
        self.fail.add(total)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def executed(self) -> None:
        """One back-end call done."""
        self.execution_count += 1
