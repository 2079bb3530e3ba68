"""Consequence envelopes: where the reference runs' training dynamics went, and how far a
checked run may stray before it cannot learn like them.

A configuration drift (a learning-rate schedule, an optimizer setting) is a warning as long
as the run's dynamics stay inside these envelopes; a violated envelope is an error, and the
drift that explains it becomes its root cause (invariants/explain.py). The envelopes are
fitted on the reference values a check would see (policy.CHECK_SAMPLING), so that a check's
sparser sampling compares like with like.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from invariants import policy
from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Sample, Template, fmt, rounded, window_numbers

EDGE = policy.TREND_EDGE
TINY = 1e-12  # a value of 0 in a geometric mean (a block whose update is exactly zero)

Points = List[Tuple[int, float]]


def sampled(run: Sequence[Tuple[int, Any]], sampling: Tuple[int, int], end: int) -> Points:
    """The numeric (step, value) pairs a check with this sampling would observe up to `end`."""
    dense, every = sampling
    return [(s, float(v)) for s, v in sorted(run)
            if s <= end and isinstance(v, float) and (s < dense or (every > 0 and s % every == 0))]


def fall_ratio(values: List[float]) -> Optional[float]:
    """The mean of the last EDGE values over the mean of the first EDGE (None: too few, or a
    start that is not positive)."""
    if len(values) < 2 * EDGE:
        return None
    start, end = statistics.fmean(values[:EDGE]), statistics.fmean(values[-EDGE:])
    return end / start if start > 0 and end >= 0 else None


def batch_noise(runs: Sequence[Sequence[Tuple[int, Any]]], end: int) -> float:
    """The batch-to-batch noise of a positive per-step value, in log units: the median over
    runs of the std of consecutive log differences over sqrt(2)."""
    noises = []
    for run in runs:
        logs = [math.log(v) for s, v in sorted(run) if s <= end and isinstance(v, float) and v > 0]
        diffs = [b - a for a, b in zip(logs, logs[1:])]
        if len(diffs) > 1:
            noises.append(statistics.pstdev(diffs) / math.sqrt(2))
    return statistics.median(noises) if noises else 0.0


def _factor_margin(value: float, lo: Optional[float], hi: Optional[float]) -> Optional[float]:
    """How many times a value could still grow or shrink before it leaves [lo, hi]."""
    room = [hi / value if hi is not None and value > 0 else None,
            value / lo if lo is not None and lo > 0 else None]
    room = [r for r in room if r is not None]
    return min(room) if room else None


@register("progress")
class Progress(Template):
    """Learning progress: over the step window the variable (the loss) ends between `min`
    and `max` times its start (the mean of the last three observations over the first
    three). `max` says how little it may fall: a fraction of the smallest fall of the
    reference runs; `min` how far: beyond it the loss falls faster than any reference run
    could, the mark of a leak (targets visible in the inputs)."""

    EXPECT = {
        "min": Field(NUMBER, doc="smallest end/start ratio (falls faster: a leak)"),
        "max": Field(NUMBER, nullable=True, doc="largest end/start ratio (does not fall); null: not learned"),
    }
    WINDOWED = True

    @classmethod
    def fit(cls, sample: Sample, min_fall: float = policy.TREND_MIN_FALL, keep: float = policy.TREND_KEEP,
            leak: float = policy.LEAK_FACTOR, sampling: Tuple[int, int] = policy.CHECK_SAMPLING,
            **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        ratios = [r for r in (fall_ratio([v for _, v in sampled(run, sampling, s.last_step)]) for run in s.runs)
                  if r is not None and r > 0]
        if len(ratios) < sample.runs:
            return Discard(f"too few runs with {2 * EDGE}+ observations and a positive start ({len(ratios)})")
        spread = statistics.pstdev(math.log(r) for r in ratios) if len(ratios) > 1 else 0.0
        lo = min(ratios) / max(leak, math.exp(policy.MARGIN * spread))
        # "Does not fall" is only learned when every reference run fell well beyond the
        # noise of the estimate (batch-to-batch noise of the loss, averaged over EDGE
        # batches at each end, and the runs' own spread); a checked run must then fall by
        # at least `keep` of the smallest fall.
        least = -math.log(max(ratios))
        noise = max(batch_noise(s.runs, s.last_step) * math.sqrt(2 / EDGE), spread)
        hi = math.exp(-keep * least) if least > max(policy.MARGIN * noise, -math.log(1 - min_fall)) else None
        return Fit({"min": rounded(lo), "max": None if hi is None else rounded(hi)},
                   [min(ratios), max(ratios)], s.observations, len(ratios))

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        r = fall_ratio(window_numbers(values[0]))
        if r is None:
            return True  # not enough evidence to falsify
        return r >= expect["min"] and (expect.get("max") is None or r <= expect["max"])

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        if expect.get("max") is None:
            return f"ends at >= {fmt(expect['min'])}x its start over the window"
        return f"ends at {fmt(expect['min'])}x to {fmt(expect['max'])}x its start over the window"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        vals = window_numbers(values[0])
        r = fall_ratio(vals)
        if r is None:
            return "too few values"
        seen = f" (the reference runs: {fmt(float(span[0]))}x to {fmt(float(span[1]))}x)" if span else ""
        return f"ended at {r:.3g}x its start ({fmt(statistics.fmean(vals[:EDGE]))} -> " \
               f"{fmt(statistics.fmean(vals[-EDGE:]))}){seen}"

    @classmethod
    def describe_span(cls, span: Optional[Sequence[Any]]) -> str:
        if not span:
            return "held"
        return f"ended at {fmt(float(min(span)))}x to {fmt(float(max(span)))}x its start over the window"

    @classmethod
    def margin(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> Optional[float]:
        r = fall_ratio(window_numbers(values[0]))
        return None if r is None else _factor_margin(r, expect["min"], expect.get("max"))


@register("level")
class Level(Template):
    """The typical size of a positive quantity over the step window (the geometric mean of
    its observations: a block's update ratio or gradient norm) stays within [min, max]: no
    collapse, no explosion. The bounds sit `factor` (or the reference's own run-to-run
    spread, whichever is wider) beyond the reference runs' levels."""

    EXPECT = {"min": Field(NUMBER, doc="lowest geometric mean"), "max": Field(NUMBER, doc="highest geometric mean")}
    WINDOWED = True

    @staticmethod
    def level(values: Sequence[float]) -> Optional[float]:
        """The geometric mean (values <= 0 count as TINY); None for no value."""
        if not values:
            return None
        return math.exp(statistics.fmean(math.log(max(v, TINY)) for v in values))

    @classmethod
    def fit(cls, sample: Sample, factor: float = policy.DECADE, sampling: Tuple[int, int] = policy.CHECK_SAMPLING,
            **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        per_run = [[v for _, v in sampled(run, sampling, s.last_step)] for run in s.runs]
        if sum(1 for r in per_run if r) < sample.runs or sum(len(r) for r in per_run) < policy.MIN_OBSERVATIONS:
            return Discard(f"too few observations ({sum(len(r) for r in per_run)}) in {sample.runs} runs")
        if any(v <= 0 for r in per_run for v in r):
            return Discard("not positive: a geometric mean does not apply")
        levels = [cls.level(r) for r in per_run if r]
        spread = statistics.pstdev(math.log(x) for x in levels) if len(levels) > 1 else 0.0
        f = max(factor, math.exp(policy.MARGIN * spread))
        return Fit({"min": rounded(min(levels) / f), "max": rounded(max(levels) * f)}, [min(levels), max(levels)],
                   s.observations, len(levels))

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        g = cls.level(window_numbers(values[0]))
        return g is None or expect["min"] <= g <= expect["max"]

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return f"typical size in [{fmt(expect['min'])}, {fmt(expect['max'])}] over the window"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        g = cls.level(window_numbers(values[0]))
        if g is None:
            return "no value"
        if span and len(span) == 2:
            lo, hi = float(span[0]), float(span[1])
            if g > hi:
                return f"typical size {fmt(g)} ({g / hi:.3g}x the reference's largest {fmt(hi)})"
            if g < lo:
                return f"typical size {fmt(g)} (1/{lo / g:.3g} of the reference's smallest {fmt(lo)})"
        return f"typical size {fmt(g)}"

    @classmethod
    def describe_span(cls, span: Optional[Sequence[Any]]) -> str:
        if not span:
            return "held"
        return f"had a typical size (geometric mean over the window) of {fmt(float(span[0]))} to {fmt(float(span[1]))}"

    @classmethod
    def deviation(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> float:
        g = cls.level(window_numbers(values[0]))
        if g is None:
            return 1.0
        return max(math.log10(max(expect["min"] / g, g / expect["max"], 1.0)), 1e-3)

    @classmethod
    def margin(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> Optional[float]:
        g = cls.level(window_numbers(values[0]))
        return None if g is None else _factor_margin(g, expect["min"], expect["max"])


@register("ceiling")
class Ceiling(Template):
    """The variable stays below `factor` times the highest value the reference runs had *at
    the same step* (the learning rate along its schedule: a rate the reference never
    trained with at that point risks what it never showed). Each point is [step, high];
    between points the last one before the step applies."""

    EXPECT = {
        "points": Field((list,), doc="[step, high] per traced step, steps increasing"),
        "factor": Field(NUMBER, doc="allowed factor above high"),
    }

    @classmethod
    def fit(cls, sample: Sample, factor: float = policy.SCHEDULE_FACTOR, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        by_step: dict = {}
        for run in s.runs:
            for step, v in run:
                if isinstance(v, float) and v > 0:
                    by_step.setdefault(step, []).append(v)
        points = [[int(st), rounded(max(vs))] for st, vs in sorted(by_step.items()) if len(vs) >= sample.runs]
        if len(points) < policy.SCHEDULE_MIN_POINTS:
            return Discard(f"too few steps seen in all {sample.runs} runs "
                           f"({len(points)} < {policy.SCHEDULE_MIN_POINTS})")
        return Fit({"points": points, "factor": factor}, [min(p[1] for p in points), max(p[1] for p in points)],
                   s.observations, s.present_runs)

    @classmethod
    def check_expect(cls, expect: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
        last = -1
        for i, p in enumerate(expect["points"]):
            if not (isinstance(p, list) and len(p) == 2 and not any(isinstance(x, bool) for x in p)
                    and isinstance(p[0], int) and isinstance(p[1], (int, float))):
                return f"expected [step, high] with an integer step, got {p!r}", f"expect.points[{i}]"
            if p[0] <= last:
                return f"steps must increase: {p[0]} after {last}", f"expect.points[{i}]"
            last = p[0]
        if expect["factor"] < 1:
            return f"factor must be >= 1, got {expect['factor']!r}", "expect.factor"
        return None

    @staticmethod
    def point(expect: Mapping[str, Any], step: int) -> Optional[List[Any]]:
        """The [step, high] that applies at `step` (None before the first)."""
        best = None
        for p in expect["points"]:
            if isinstance(p, list) and len(p) == 2 and p[0] <= step:
                best = p
        return best

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        p, v = cls.point(expect, step), values[0]
        if p is None:
            return True
        return isinstance(v, float) and v <= p[1] * float(expect["factor"])

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return f"at most x{fmt(float(expect['factor']))} the reference's highest at the same step"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        p, v = cls.point(expect, step), values[0]
        if p is None or not isinstance(v, float) or not p[1]:
            return fmt(v)
        return f"{fmt(v)} ({v / p[1]:.3g}x the reference's {fmt(p[1])} at step {p[0]})"

    @classmethod
    def margin(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> Optional[float]:
        p, v = cls.point(expect, step), values[0]
        if p is None or not isinstance(v, float) or v <= 0:
            return None
        return p[1] * float(expect["factor"]) / v
