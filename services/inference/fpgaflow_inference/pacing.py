"""One modelled device serving every request: a batch of n samples starts when the device takes new
input (its previous work advanced by n x II) and finishes its latency + (n - 1) x II later."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DevicePacer:
    latency_s: float
    ii_s: float
    free_at: float = float("-inf")  # when the device's pipeline next takes an input

    def reserve(self, now: float, samples: int) -> float:
        """Book a batch arriving at ``now``; returns when the device has its last output."""
        start = max(now, self.free_at)
        self.free_at = start + samples * self.ii_s
        return start + self.latency_s + (samples - 1) * self.ii_s
