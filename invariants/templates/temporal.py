"""Templates over the course of a run: trend, schedule."""
from __future__ import annotations

import statistics
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from invariants import policy
from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Sample, Template, fmt, rounded, window_numbers

EDGE = policy.TREND_EDGE


def relative_change(values: List[float]) -> float:
    """(end - start) / |start| with start/end the means of the first/last EDGE values."""
    start = statistics.fmean(values[:EDGE])
    end = statistics.fmean(values[-EDGE:])
    return (end - start) / abs(start) if start else 0.0


@register("trend")
class Trend(Template):
    """The variable falls (or rises) over the step window by at least `min_change`
    (relative change between the means of the first and last three observations). Its
    values are collected over the window and decided once, at the window's end."""

    EXPECT = {
        "direction": Field((str,), doc="'decreasing' or 'increasing'",
                           choices=("decreasing", "increasing")),
        "min_change": Field(NUMBER, doc="relative change between window start and end"),
    }
    WINDOWED = True

    @classmethod
    def fit(cls, sample: Sample, min_fall: float = policy.TREND_MIN_FALL, keep: float = policy.TREND_KEEP,
            **params: Any) -> Union[Fit, Discard]:
        """Every reference run falls by more than `min_fall` over the traced window; a
        checked run must fall by `keep` times the smallest of those falls."""
        s = sample.first
        end = s.last_step
        changes = []
        for run in s.runs:
            vals = [float(v) for step, v in sorted(run) if step <= end and isinstance(v, float)]
            if len(vals) >= 2 * EDGE + 2:
                changes.append(relative_change(vals))
        if len(changes) < sample.runs:
            return Discard(f"too few runs with {2 * EDGE + 2}+ observations ({len(changes)})")
        if all(c < -min_fall for c in changes):
            return Fit({"direction": "decreasing", "min_change": float(f"{-max(changes) * keep:.3g}")},
                       [min(changes), max(changes)], s.observations, len(changes))
        return Discard(f"falsified: changes {', '.join(fmt(c) for c in changes)} are not all falling")

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        vals = window_numbers(values[0])
        if len(vals) < 2 * EDGE:
            return True  # not enough evidence to falsify
        c = relative_change(vals)
        return c <= -expect["min_change"] if expect["direction"] == "decreasing" else c >= expect["min_change"]

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        word = "falls" if expect["direction"] == "decreasing" else "rises"
        return f"{word} by >= {fmt(100 * expect['min_change'])}% over the window"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        vals = window_numbers(values[0])
        if len(vals) >= 2:
            return f"changed {100 * relative_change(vals):+.1f}% ({fmt(vals[0])} -> {fmt(vals[-1])})"
        return "too few values"

    @classmethod
    def describe_span(cls, span: Optional[Sequence[Any]]) -> str:
        if not span:
            return "held"
        lo, hi = min(span), max(span)
        return f"changed by {100 * lo:+.1f}% to {100 * hi:+.1f}% over the window"


@register("schedule")
class Schedule(Template):
    """The variable follows the reference's value *at the same step* within a factor
    (a learning-rate schedule: warm-up, decay). Each point is [step, low, high]: the lowest
    and highest value the reference runs had at that step; between points the last one
    before the step applies."""

    EXPECT = {
        "points": Field((list,), doc="[step, low, high] per traced step, steps increasing"),
        "factor": Field(NUMBER, doc="allowed factor below low and above high"),
    }

    @classmethod
    def fit(cls, sample: Sample, factor: float = policy.SCHEDULE_FACTOR, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        by_step: dict = {}
        for run in s.runs:
            for step, v in run:
                if isinstance(v, float) and v > 0:
                    by_step.setdefault(step, []).append(v)
        points = [[st, min(vs), max(vs)] for st, vs in sorted(by_step.items()) if len(vs) >= sample.runs]
        if len(points) < policy.SCHEDULE_MIN_POINTS:
            return Discard(f"too few steps seen in all {sample.runs} runs "
                           f"({len(points)} < {policy.SCHEDULE_MIN_POINTS})")
        if all(p[1] == points[0][1] and p[2] == points[0][2] for p in points):
            return Discard("obvious: constant, the range covers it")
        points = [[int(st), rounded(lo), rounded(hi)] for st, lo, hi in points]
        return Fit({"points": points, "factor": factor}, [points[0][1], points[-1][2]],
                   s.observations, s.present_runs)

    @classmethod
    def check_expect(cls, expect: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
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

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        v = values[0]
        p = cls.point(expect, step)
        if p is None:
            return True
        if not isinstance(v, float):
            return False
        f = float(expect["factor"])
        return p[1] / f <= v <= p[2] * f

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return f"within x{fmt(float(expect['factor']))} of the reference at the same step " \
               f"({len(expect['points'])} steps)"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        v = values[0]
        p = cls.point(expect, step) if isinstance(v, float) else None
        if p is None:
            return fmt(v)
        ref = p[2] if v > p[2] else p[1]
        return f"{fmt(v)} ({v / ref:.3g}x the reference's {fmt(ref)} at step {p[0]})" if ref else fmt(v)
