"""Templates over the course of a run: trend, schedule."""
from __future__ import annotations

import statistics
from typing import Any, List, Mapping, Optional, Sequence, Tuple

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


@register("schedule")
class Schedule:
    """The variable follows the reference's value *at the same step* within a factor
    (a learning-rate schedule: warm-up, decay). Each point is [step, low, high]: the lowest
    and highest value the reference runs had at that step; between points the last one
    before the step applies."""

    ARITY = 1
    EXPECT = {
        "points": Field((list,), doc="[step, low, high] per traced step, steps increasing"),
        "factor": Field(NUMBER, doc="allowed factor below low and above high"),
    }
    STEPWISE = True  # holds() is told the step
    MIN_POINTS = 6

    @staticmethod
    def fit(series: Series, min_runs: int, factor: float) -> Fit | Discard:
        by_step: dict = {}
        for run in series.runs:
            for step, v in run:
                if isinstance(v, float) and v > 0:
                    by_step.setdefault(step, []).append(v)
        points = [[s, min(vs), max(vs)] for s, vs in sorted(by_step.items()) if len(vs) >= min_runs]
        if len(points) < Schedule.MIN_POINTS:
            return Discard(f"too few steps seen in all {min_runs} runs ({len(points)} < {Schedule.MIN_POINTS})")
        if all(p[1] == points[0][1] and p[2] == points[0][2] for p in points):
            return Discard("obvious: constant, the range covers it")
        points = [[int(s), float(f"{lo:.6g}"), float(f"{hi:.6g}")] for s, lo, hi in points]
        return Fit({"points": points, "factor": factor}, [points[0][1], points[-1][2]],
                   series.observations, series.present_runs)

    @staticmethod
    def check_expect(expect: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
        """What is wrong with a loaded `expect` beyond its field types: (message, field)."""
        last = -1
        for i, p in enumerate(expect["points"]):
            if not (isinstance(p, list) and len(p) == 3 and not any(isinstance(x, bool) for x in p)
                    and isinstance(p[0], int) and all(isinstance(x, (int, float)) for x in p[1:])):
                return f"expected [step, low, high] with an integer step, got {p!r}", f"expect.points[{i}]"
            if p[0] <= last:
                return f"steps must increase: {p[0]} after {last}", f"expect.points[{i}]"
            if p[1] > p[2]:
                return f"low ({p[1]!r}) is greater than high ({p[2]!r})", f"expect.points[{i}]"
            last = p[0]
        if expect["factor"] < 1:
            return f"factor must be >= 1, got {expect['factor']!r}", "expect.factor"
        return None

    @staticmethod
    def point(expect: Mapping[str, Any], step: int) -> Any:
        """The [step, low, high] that applies at `step` (None before the first)."""
        best = None
        for p in expect["points"]:
            if isinstance(p, list) and len(p) == 3 and all(isinstance(x, (int, float)) for x in p) and p[0] <= step:
                best = p
        return best

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        v = values[0]
        p = Schedule.point(expect, step)
        if p is None:
            return True
        if not isinstance(v, float):
            return False
        f = float(expect["factor"])
        return p[1] / f <= v <= p[2] * f

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        return f"within x{fmt(float(expect['factor']))} of the reference at the same step " \
               f"({len(expect['points'])} steps)"
