"""Single-variable templates: constant, one-of, range, magnitude."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

from invariants import policy
from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Sample, Template, fmt, rounded, spread


def _same(want: Any, got: Any) -> bool:
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(float(want), float(got), rel_tol=1e-9, abs_tol=1e-12)
    return str(want) == str(got)


@register("constant")
class Constant(Template):
    """The variable takes one value in every observation (shape, dtype, parameter count)."""

    EXPECT = {"value": Field(NUMBER + (str,), doc="the value every observation has")}
    FIXES_VALUE = True

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        values = s.values
        distinct = sorted(set(values), key=str)
        if len(distinct) != 1:
            return Discard(f"falsified: {len(distinct)} distinct values ({', '.join(map(fmt, distinct[:4]))})")
        if s.present_runs < sample.runs:
            return Discard(f"seen in {s.present_runs} of {sample.runs} runs")
        return Fit({"value": distinct[0]}, [distinct[0]], len(values), s.present_runs)

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        return _same(expect["value"], values[0])

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return f"== {fmt(expect['value'])}"


@register("one_of")
class OneOf(Template):
    """The variable takes one of a few values."""

    EXPECT = {"values": Field((list,), doc="the allowed values")}

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        distinct = sorted(set(s.values), key=str)
        if len(distinct) > policy.ONE_OF_MAX_VALUES:
            return Discard(f"falsified: {len(distinct)} distinct values (> {policy.ONE_OF_MAX_VALUES})")
        if s.observations < policy.MIN_OBSERVATIONS * len(distinct):
            return Discard(f"too few observations ({s.observations}) for {len(distinct)} values")
        return Fit({"values": distinct}, distinct, s.observations, s.present_runs)

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        return any(_same(v, values[0]) for v in expect["values"])

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return "one of " + ", ".join(fmt(v) for v in expect["values"])

    @classmethod
    def describe_span(cls, span: Optional[Sequence[Any]]) -> str:
        if span and not all(isinstance(v, (int, float)) for v in span):
            return "took the values " + ", ".join(fmt(v) for v in span)
        return super().describe_span(span)


class _Bounds(Template):
    """A number within [min, max] (either may be open): what range and magnitude check."""

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        v = values[0]
        if not isinstance(v, (int, float)):
            return False  # nan/inf arrive as text
        lo, hi = expect.get("min"), expect.get("max")
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        lo, hi = expect.get("min"), expect.get("max")
        if hi is None:
            return f">= {fmt(lo)}"
        if lo is None:
            return f"<= {fmt(hi)}"
        return f"in [{fmt(lo)}, {fmt(hi)}]"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        v = values[0]
        if isinstance(v, float) and span and len(span) == 2 and all(isinstance(x, (int, float)) for x in span):
            lo, hi = float(span[0]), float(span[1])
            if hi > 0 and v > hi:
                return f"{fmt(v)} ({v / hi:.3g}x the reference maximum {fmt(hi)})"
            if lo > 0 and 0 < v < lo:
                return f"{fmt(v)} (1/{lo / v:.3g} of the reference minimum {fmt(lo)})"
        return fmt(v)

    @classmethod
    def deviation(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> float:
        v = values[0]
        if not isinstance(v, float):
            return 1.0
        lo, hi = expect.get("min"), expect.get("max")
        width = max(abs(hi - lo) if lo is not None and hi is not None else abs(hi or lo or 1.0), 1e-12)
        if hi is not None and v > hi:
            return (v - hi) / width
        if lo is not None and v < lo:
            return (lo - v) / width
        return 1.0


@register("range")
class Range(_Bounds):
    """The variable stays within [min, max]; the margin comes from observed spread: `margin`
    times the larger of run-to-run and step-to-step spread (at least `floor`) beyond the
    observed extremes, in log10 space with `log`. `lower_only` leaves max open, `clip`
    bounds the bounds, `positive` discards a lower bound of 0 or less as trivial."""

    EXPECT = {
        "min": Field(NUMBER, nullable=True, doc="lower bound (null: none)"),
        "max": Field(NUMBER, nullable=True, doc="upper bound (null: none)"),
    }

    @classmethod
    def fit(cls, sample: Sample, log: bool = False, margin: float = policy.MARGIN, floor: float = 0.0,
            lower_only: bool = False, clip: Optional[Tuple[float, float]] = None,
            positive: bool = False, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        values = [float(v) for v in s.values]
        if not sample.enough():
            return Discard(f"too few observations ({len(values)} < {policy.MIN_OBSERVATIONS})")
        if log and min(values) <= 0:
            return Discard("not positive: a log-scale bound does not apply")
        width = max(spread(s, log=log), floor)
        lo, hi = min(values), max(values)
        if log:
            lo_b, hi_b = 10 ** (math.log10(lo) - margin * width), 10 ** (math.log10(hi) + margin * width)
        else:
            lo_b, hi_b = lo - margin * width, hi + margin * width
        if clip is not None:
            lo_b, hi_b = max(lo_b, clip[0]), min(hi_b, clip[1])
        if positive and rounded(lo_b) <= 0:
            return Discard("trivial: the reference minimum is 0")
        return Fit({"min": rounded(lo_b), "max": None if lower_only else rounded(hi_b)}, [lo, hi],
                   len(values), s.present_runs)


@register("magnitude")
class Magnitude(_Bounds):
    """The variable keeps its order of magnitude: at most `above` times the observed
    maximum (or exactly `top`) and at least the observed minimum over `below` (None: no
    lower bound)."""

    EXPECT = {
        "min": Field(NUMBER, doc="lower bound"),
        "max": Field(NUMBER, doc="upper bound"),
    }

    @classmethod
    def fit(cls, sample: Sample, below: Optional[float] = policy.DECADE, above: float = policy.DECADE,
            top: Optional[float] = None, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        values = [float(v) for v in s.values]
        if not sample.enough():
            return Discard(f"too few observations ({len(values)} < {policy.MIN_OBSERVATIONS})")
        if min(values) <= 0:
            return Discard("not positive: order of magnitude undefined")
        lo = 0.0 if below is None else rounded(min(values) / below)
        hi = float(top) if top is not None else rounded(max(values) * above)
        return Fit({"min": lo, "max": hi}, [min(values), max(values)], len(values), s.present_runs)
