"""The queue's order and its admission under the limits: pure functions of the queue entries (rows of the run
store's ``queue`` table, as ``RunStore.queue_entries`` returns them).

- Order: higher ``priority`` first, then earlier submission.
- Limits are in trial slots: a running experiment holds ``slots`` (its ``sweep.parallelTrials``, at most its
  trials), counted against the server's total and against its executor's own limit.
- No back-filling: an experiment that waits for slots holds back the ones after it on its executor (or on all
  executors, when it waits for the server's total), so a large experiment is never starved by small ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    max_slots: int  # trial slots running at once, every executor together
    per_executor: Mapping[str, int] = field(default_factory=dict)  # an executor's own limit (absent: max_slots)

    def of(self, executor: str) -> int:
        return min(self.per_executor.get(executor, self.max_slots), self.max_slots)


@dataclass(frozen=True)
class Plan:
    start: list[dict]  # the queued entries to start now, in order
    waiting: dict[int, str]  # entry id: why it waits
    positions: dict[int, int]  # entry id: 1 for the next to start


def ordered(entries: list[dict]) -> list[dict]:
    """The queued entries in the order they start."""
    return sorted((e for e in entries if e["state"] == "Queued"), key=lambda e: (-e["priority"], e["submitted"], e["id"]))


def slots_in_use(entries: list[dict]) -> Counter:
    """Trial slots held by running entries, per executor."""
    used: Counter = Counter()
    for e in entries:
        if e["state"] == "Running":
            used[e["executor"]] += e["slots"]
    return used


def plan(entries: list[dict], limits: Limits, unavailable: Mapping[str, str] | None = None) -> Plan:
    """Which queued entries start now and why each of the others waits. ``unavailable``: executor: why it
    cannot start anything now (its entries wait without holding back the others)."""
    unavailable = unavailable or {}
    used = slots_in_use(entries)
    total = sum(used.values())
    start: list[dict] = []
    waiting: dict[int, str] = {}
    positions: dict[int, int] = {}
    held_by: dict[str, str] = {}  # executor: the entry first in line that waits for its slots
    all_held_by: str | None = None  # the entry first in line that waits for the server's slots
    for position, e in enumerate(ordered(entries), start=1):
        positions[e["id"]] = position
        executor, slots = e["executor"], e["slots"]
        if executor in unavailable:
            waiting[e["id"]] = f"executor {executor} is unavailable: {unavailable[executor]}"
        elif all_held_by is not None:
            waiting[e["id"]] = f"behind {all_held_by!r}, which waits for the server's trial slots"
        elif executor in held_by:
            waiting[e["id"]] = f"behind {held_by[executor]!r}, which waits for {executor} trial slots"
        elif used[executor] + slots > limits.of(executor):
            waiting[e["id"]] = (f"waits for {slots} {executor} trial slot{'s' * (slots != 1)}: "
                                f"{used[executor]} of {limits.of(executor)} in use")
            held_by[executor] = e["name"]
        elif total + slots > limits.max_slots:
            waiting[e["id"]] = (f"waits for {slots} trial slot{'s' * (slots != 1)}: {total} of the server's "
                                f"{limits.max_slots} in use")
            all_held_by = e["name"]
        else:
            start.append(e)
            used[executor] += slots
            total += slots
    return Plan(start, waiting, positions)
