"""Single-variable templates: constant, one-of, range, magnitude."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Series, fmt, spread

MIN_OBSERVATIONS = 6   # fewer and a candidate is not justified, whatever it says
MARGIN = 4.0           # range bounds sit this many spreads beyond the observed extremes


@register("constant")
class Constant:
    """The variable takes one value in every observation (shape, dtype, parameter count)."""

    ARITY = 1
    EXPECT = {"value": Field(NUMBER + (str,), doc="the value every observation has")}

    @staticmethod
    def fit(series: Series, min_runs: int) -> Fit | Discard:
        values = series.values
        distinct = sorted(set(values), key=str)
        if len(distinct) != 1:
            return Discard(f"falsified: {len(distinct)} distinct values ({', '.join(map(fmt, distinct[:4]))})")
        if series.present_runs < min_runs:
            return Discard(f"seen in {series.present_runs} of {min_runs} runs")
        return Fit({"value": distinct[0]}, [distinct[0]], len(values), series.present_runs)

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        want, got = expect["value"], values[0]
        if isinstance(want, (int, float)) and isinstance(got, (int, float)):
            return math.isclose(float(want), float(got), rel_tol=1e-9, abs_tol=1e-12)
        return str(want) == str(got)

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        return f"== {fmt(expect['value'])}"


@register("one_of")
class OneOf:
    """The variable takes one of a few values."""

    ARITY = 1
    EXPECT = {"values": Field((list,), doc="the allowed values")}
    MAX_VALUES = 4

    @staticmethod
    def fit(series: Series, min_runs: int) -> Fit | Discard:
        distinct = sorted(set(series.values), key=str)
        if len(distinct) > OneOf.MAX_VALUES:
            return Discard(f"falsified: {len(distinct)} distinct values (> {OneOf.MAX_VALUES})")
        if series.observations < MIN_OBSERVATIONS * len(distinct):
            return Discard(f"too few observations ({series.observations}) for {len(distinct)} values")
        return Fit({"values": distinct}, distinct, series.observations, series.present_runs)

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        return any(Constant.holds({"value": v}, values) for v in expect["values"])

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        return "one of " + ", ".join(fmt(v) for v in expect["values"])


def enough(series: Series, per_run: bool) -> bool:
    """Support: MIN_OBSERVATIONS values, or (`per_run`: a once-per-run fact) three runs."""
    return series.observations >= MIN_OBSERVATIONS or (per_run and series.present_runs >= 3)


def _bounds_fit(series: Series, log: bool, margin: float, floor: float, lower_only: bool = False,
                lo_clip: float | None = None, hi_clip: float | None = None, per_run: bool = False) -> Fit | Discard:
    values = [float(v) for v in series.values]
    if not enough(series, per_run):
        return Discard(f"too few observations ({len(values)} < {MIN_OBSERVATIONS})")
    if log and min(values) <= 0:
        return Discard("not positive: a log-scale bound does not apply")
    s = max(spread(series, log=log), floor)
    lo, hi = min(values), max(values)
    if log:
        lo_b, hi_b = 10 ** (math.log10(lo) - margin * s), 10 ** (math.log10(hi) + margin * s)
    else:
        lo_b, hi_b = lo - margin * s, hi + margin * s
    if lo_clip is not None:
        lo_b = max(lo_b, lo_clip)
    if hi_clip is not None:
        hi_b = min(hi_b, hi_clip)
    return Fit({"min": _round(lo_b), "max": None if lower_only else _round(hi_b)}, [lo, hi],
               len(values), series.present_runs)


def _round(v: float) -> float:
    return float(f"{v:.6g}")


@register("range")
class Range:
    """The variable stays within [min, max]; the margin comes from observed spread:
    MARGIN times the larger of run-to-run and step-to-step spread beyond the extremes."""

    ARITY = 1
    EXPECT = {
        "min": Field(NUMBER, nullable=True, doc="lower bound (null: none)"),
        "max": Field(NUMBER, nullable=True, doc="upper bound (null: none)"),
    }
    fit = staticmethod(_bounds_fit)

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        v = values[0]
        if not isinstance(v, (int, float)):
            return False  # nan/inf arrive as text
        lo, hi = expect.get("min"), expect.get("max")
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        lo, hi = expect.get("min"), expect.get("max")
        if hi is None:
            return f">= {fmt(lo)}"
        if lo is None:
            return f"<= {fmt(hi)}"
        return f"in [{fmt(lo)}, {fmt(hi)}]"


@register("magnitude")
class Magnitude:
    """The variable keeps its order of magnitude: within a decade of the observed span."""

    ARITY = 1
    EXPECT = {
        "min": Field(NUMBER, doc="lower bound"),
        "max": Field(NUMBER, doc="upper bound"),
    }
    DECADES = 1.0

    @staticmethod
    def fit(series: Series, min_runs: int, per_run: bool = False) -> Fit | Discard:
        values = [float(v) for v in series.values]
        if not enough(series, per_run):
            return Discard(f"too few observations ({len(values)} < {MIN_OBSERVATIONS})")
        if min(values) <= 0:
            return Discard("not positive: order of magnitude undefined")
        f = 10 ** Magnitude.DECADES
        return Fit({"min": _round(min(values) / f), "max": _round(max(values) * f)},
                   [min(values), max(values)], len(values), series.present_runs)

    holds = Range.holds
    expected = Range.expected
