"""Two-variable templates: difference within a tolerance, ratio within bounds.

Both are fitted on pairs observed at the same step (and phase) in the same run."""
from __future__ import annotations

import statistics
from typing import Any, List, Mapping, Sequence, Tuple

from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Series, fmt

MIN_PAIRS = 3
MARGIN = 4.0


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


def _spread(per_run: List[List[float]]) -> float:
    means = [statistics.fmean(r) for r in per_run if r]
    between = statistics.pstdev(means) if len(means) > 1 else 0.0
    within = [statistics.pstdev(r) for r in per_run if len(r) > 1]
    return max(between, statistics.median(within) if within else 0.0)


@register("equal")
class Equal:
    """target[0] - target[1] == offset, within tolerance (eval vs train data statistics)."""

    ARITY = 2
    EXPECT = {"offset": Field(NUMBER, doc="expected target[0] - target[1]"),
              "tolerance": Field(NUMBER, doc="allowed deviation from the offset")}

    @staticmethod
    def fit(a: Series, b: Series, floor: float) -> Fit | Discard:
        per_run = [[x - y for x, y in run] for run in pairs(a, b)]
        diffs = [d for r in per_run for d in r]
        if sum(1 for r in per_run if r) < 2 or len(diffs) < 2:
            return Discard(f"too few paired observations ({len(diffs)})")
        offset = statistics.fmean(diffs)
        tol = max(MARGIN * _spread(per_run), max(abs(d - offset) for d in diffs) * 1.5, floor)
        return Fit({"offset": float(f"{offset:.6g}"), "tolerance": float(f"{tol:.6g}")},
                   [min(diffs), max(diffs)], len(diffs), sum(1 for r in per_run if r))

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        a, b = values
        if not isinstance(a, float) or not isinstance(b, float):
            return False
        return abs((a - b) - expect["offset"]) <= expect["tolerance"]

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        return f"difference {fmt(expect['offset'])} ± {fmt(expect['tolerance'])}"


@register("ratio")
class Ratio:
    """target[0] / target[1] stays within [min, max] (output width vs largest label)."""

    ARITY = 2
    EXPECT = {
        "min": Field(NUMBER, doc="lower bound of the ratio"),
        "max": Field(NUMBER, doc="upper bound of the ratio"),
    }

    @staticmethod
    def fit(a: Series, b: Series, floor: float) -> Fit | Discard:
        per_run = [[x / y for x, y in run if y != 0] for run in pairs(a, b)]
        ratios = [r for run in per_run for r in run]
        if len(ratios) < MIN_PAIRS:
            return Discard(f"too few paired observations ({len(ratios)} < {MIN_PAIRS})")
        s = max(_spread(per_run), floor)
        lo, hi = min(ratios) - MARGIN * s, max(ratios) + MARGIN * s
        return Fit({"min": float(f"{lo:.6g}"), "max": float(f"{hi:.6g}")}, [min(ratios), max(ratios)],
                   len(ratios), sum(1 for r in per_run if r))

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        a, b = values
        if not isinstance(a, float) or not isinstance(b, float) or b == 0:
            return False
        return expect["min"] <= a / b <= expect["max"]

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        return f"ratio in [{fmt(expect['min'])}, {fmt(expect['max'])}]"
