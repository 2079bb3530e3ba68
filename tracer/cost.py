"""What a training step costs: wall time and peak memory (docs/observations.md, `step.*`)."""
from __future__ import annotations

import collections
import resource
import statistics
import time

import torch

from tracer.pending import Pending


class StepCost:
    """Times each optimizer step (from the previous one; step 0 from the model's first
    call) and reads the peak memory."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._times: collections.deque = collections.deque(maxlen=5)
        self._rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def restart(self) -> None:
        """Step 0 starts at the root model's first call, not at import time."""
        self._started = time.perf_counter()

    def lap(self) -> None:
        """An optimizer step ended: its time is kept, the next one starts."""
        now = time.perf_counter()
        self._times.append(now - self._started)
        self._started = now

    def record(self, p: Pending, step: int) -> None:
        # A median over recent steps: one step slowed by another process is not a cost change.
        p.value(step, "train", "step.time", statistics.median(self._times))
        p.value(step, "train", "step.peak_mem", self._peak_memory())

    def _peak_memory(self) -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return float(torch.cuda.max_memory_allocated())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(max(0, rss - self._rss0) * 1024)
