"""Templates over the course of a run: trend."""
from __future__ import annotations

import statistics
from typing import Any, List, Mapping, Sequence

from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Series, fmt

EDGE = 3  # observations averaged at each end of the window


def relative_change(values: List[float]) -> float:
    """(end - start) / |start| with start/end the means of the first/last EDGE values."""
    start = statistics.fmean(values[:EDGE])
    end = statistics.fmean(values[-EDGE:])
    return (end - start) / abs(start) if start else 0.0


@register("trend")
class Trend:
    """The variable falls (or rises) over the step window by at least `min_change`
    (relative change between the means of the first and last three observations)."""

    ARITY = 1
    EXPECT = {
        "direction": Field((str,), doc="'decreasing' or 'increasing'",
                           choices=("decreasing", "increasing")),
        "min_change": Field(NUMBER, doc="relative change between window start and end"),
    }

    @staticmethod
    def fit(series: Series, min_runs: int, window_end: int) -> Fit | Discard:
        changes = []
        for run in series.runs:
            vals = [float(v) for s, v in sorted(run) if s <= window_end and isinstance(v, float)]
            if len(vals) >= 2 * EDGE + 2:
                changes.append(relative_change(vals))
        if len(changes) < min_runs:
            return Discard(f"too few runs with {2 * EDGE + 2}+ observations ({len(changes)})")
        if all(c < -0.05 for c in changes):
            return Fit({"direction": "decreasing", "min_change": float(f"{-max(changes) / 3:.3g}")},
                       [min(changes), max(changes)], series.observations, len(changes))
        return Discard(f"falsified: changes {', '.join(fmt(c) for c in changes)} are not all falling")

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        vals = [v for v in values[0] if isinstance(v, float)]
        if len(vals) < 2 * EDGE:
            return True  # not enough evidence to falsify
        c = relative_change(vals)
        return c <= -expect["min_change"] if expect["direction"] == "decreasing" else c >= expect["min_change"]

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        word = "falls" if expect["direction"] == "decreasing" else "rises"
        return f"{word} by >= {fmt(100 * expect['min_change'])}% over the window"
