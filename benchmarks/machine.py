"""What the machine did during a measurement that load averages do not show: the hypervisor's ``steal``.

Why: on a shared VM the hypervisor can take a quarter of the CPU time mid-run (26% was seen
here during a service benchmark: identify p50 198 ms against 108 ms without it), and the load
average, which counts runnable tasks, does not change. ``StealMeter`` reads the aggregate
``cpu`` line of ``/proc/stat`` (Linux) at start and on ``fraction()``; elsewhere it says None.
Imported by the latency benchmarks, which run as scripts from this folder.
"""

from __future__ import annotations

from pathlib import Path

STAT = Path("/proc/stat")
STEAL_FIELD = 8  # cpu user nice system idle iowait irq softirq steal guest guest_nice


def _ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies since boot, or None where /proc/stat is not there."""
    try:
        fields = STAT.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) <= STEAL_FIELD:
        return None
    values = [int(v) for v in fields[1 : STEAL_FIELD + 1]]  # guest time is already in user
    return values[-1], sum(values)


class StealMeter:
    """The share of CPU time the hypervisor took since this meter was made."""

    def __init__(self) -> None:
        self.start = _ticks()

    def fraction(self) -> float | None:
        end = _ticks()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        return round((end[0] - self.start[0]) / (end[1] - self.start[1]), 4)
