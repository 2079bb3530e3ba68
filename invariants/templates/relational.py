"""Two-variable templates: difference within a tolerance, ratio within bounds.

Both are fitted on pairs observed at the same step (and phase) in the same run."""
from __future__ import annotations

import statistics
from typing import Any, List, Mapping, Sequence, Tuple, Union

from invariants import policy
from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Sample, Series, Template, fmt, rounded, spread_of


def pairs(a: Series, b: Series) -> List[List[Tuple[float, float]]]:
    """Per run, the (a, b) values at steps where both were observed (latest b at or before)."""
    out = []
    for ra, rb in zip(a.runs, b.runs):
        bs = sorted(rb)
        run = []
        for step, va in ra:
            prior = [vb for sb, vb in bs if sb <= step]
            vb = prior[-1] if prior else (bs[0][1] if bs else None)
            if vb is not None and isinstance(va, float) and isinstance(vb, float):
                run.append((va, vb))
        out.append(run)
    return out


def _numbers(values: Sequence[Any]) -> bool:
    return all(isinstance(v, float) for v in values)


@register("equal")
class Equal(Template):
    """target[0] - target[1] == offset, within tolerance (eval vs train data statistics)."""

    ARITY = 2
    OPERATOR = "-"
    EXPECT = {"offset": Field(NUMBER, doc="expected target[0] - target[1]"),
              "tolerance": Field(NUMBER, doc="allowed deviation from the offset")}

    @classmethod
    def fit(cls, sample: Sample, floor: float = 0.0, **params: Any) -> Union[Fit, Discard]:
        per_run = [[x - y for x, y in run] for run in pairs(*sample.series)]
        diffs = [d for r in per_run for d in r]
        if sum(1 for r in per_run if r) < 2 or len(diffs) < 2:
            return Discard(f"too few paired observations ({len(diffs)})")
        offset = statistics.fmean(diffs)
        tol = max(policy.MARGIN * spread_of(per_run), max(abs(d - offset) for d in diffs) * policy.EQUAL_SLACK,
                  floor)
        return Fit({"offset": rounded(offset), "tolerance": rounded(tol)},
                   [min(diffs), max(diffs)], len(diffs), sum(1 for r in per_run if r))

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        a, b = values
        return _numbers(values) and abs((a - b) - expect["offset"]) <= expect["tolerance"]

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return f"difference {fmt(expect['offset'])} ± {fmt(expect['tolerance'])}"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Any = None) -> str:
        a, b = values
        return f"{fmt(a)} - {fmt(b)} = {fmt(a - b) if _numbers(values) else '?'}"


@register("ratio")
class Ratio(Template):
    """target[0] / target[1] stays within [min, max] (output width vs largest label)."""

    ARITY = 2
    OPERATOR = "/"
    EXPECT = {
        "min": Field(NUMBER, doc="lower bound of the ratio"),
        "max": Field(NUMBER, doc="upper bound of the ratio"),
    }

    @classmethod
    def fit(cls, sample: Sample, floor: float = 0.0, **params: Any) -> Union[Fit, Discard]:
        per_run = [[x / y for x, y in run if y != 0] for run in pairs(*sample.series)]
        ratios = [r for run in per_run for r in run]
        if len(ratios) < policy.MIN_PAIRS:
            return Discard(f"too few paired observations ({len(ratios)} < {policy.MIN_PAIRS})")
        s = max(spread_of(per_run), floor)
        lo, hi = min(ratios) - policy.MARGIN * s, max(ratios) + policy.MARGIN * s
        return Fit({"min": rounded(lo), "max": rounded(hi)}, [min(ratios), max(ratios)],
                   len(ratios), sum(1 for r in per_run if r))

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        a, b = values
        return _numbers(values) and b != 0 and expect["min"] <= a / b <= expect["max"]

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return f"ratio in [{fmt(expect['min'])}, {fmt(expect['max'])}]"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Any = None) -> str:
        a, b = values
        return f"{fmt(a)} / {fmt(b)} = {fmt(a / b) if _numbers(values) and b else '?'}"
