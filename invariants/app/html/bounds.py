"""What an invariant allows, as lines on a plot of its first target over steps.

Rules are data: one small function per template, from the invariant's `expect` (and, for
the templates that compare a run with its own start or with a second target, the checked
run's values) to the lines to draw. A template missing here is drawn without a bound, and
the plot says so.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from invariants.policy import TREND_EDGE
from invariants.templates.base import fmt

Points = List[Tuple[int, float]]


@dataclass(frozen=True)
class Bound:
    """A line the invariant draws: `value` across the plot, or a step function through
    `points` ((step, value) pairs, each value holding until the next step)."""

    label: str
    value: Optional[float] = None
    points: Tuple[Tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Context:
    """What the bound of a relative template needs: the checked run's values of the
    invariant's first and second target, and its step window."""

    first: Points
    second: Points = ()
    window: Tuple[int, Optional[int]] = (0, None)


Rule = Callable[[Mapping[str, Any], Context], List[Bound]]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _min_max(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    # range, magnitude, level: open ends are not drawn
    return [Bound(name, value=float(expect[key])) for key, name in (("min", "lower bound"), ("max", "upper bound"))
            if _number(expect.get(key))]


def _all_none(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    want = 1.0 if expect.get("quantifier") == "all" else 0.0
    return [Bound(f"expected == {want:g} ({expect.get('quantifier')})", value=want)]


def _constant(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    v = expect.get("value")
    return [Bound("expected value", value=float(v))] if _number(v) else []


def _one_of(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    return [Bound("allowed value", value=float(v)) for v in expect.get("values") or () if _number(v)]


def _zero(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    return [Bound("expected 0", value=0.0)]


def _schedule(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    f = float(expect.get("factor") or 1.0)
    pts = [p for p in expect.get("points") or () if len(p) == 3]
    return [Bound(f"reference low / {fmt(f)}", points=tuple((int(p[0]), p[1] / f) for p in pts)),
            Bound(f"reference high x {fmt(f)}", points=tuple((int(p[0]), p[2] * f) for p in pts))]


def _ceiling(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    f = float(expect.get("factor") or 1.0)
    pts = [p for p in expect.get("points") or () if len(p) == 2]
    return [Bound(f"reference high x {fmt(f)}", points=tuple((int(p[0]), p[1] * f) for p in pts))]


def _window_start(ctx: Context) -> Optional[float]:
    """The mean of the checked run's first TREND_EDGE values in the window (what the
    windowed templates compare the window's end with)."""
    lo, hi = ctx.window
    vals = [v for s, v in ctx.first if s >= lo and (hi is None or s <= hi)]
    return statistics.fmean(vals[:TREND_EDGE]) if len(vals) >= TREND_EDGE else None


def _progress(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    start = _window_start(ctx)
    if start is None:
        return []
    fastest = float(expect["min"])
    out = [Bound(f"fastest allowed fall: {fmt(fastest)}x the start", value=start * fastest)]
    if _number(expect.get("max")):
        least = float(expect["max"])
        out.append(Bound(f"least allowed fall: {fmt(least)}x the start", value=start * least))
    return out


def _trend(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    start = _window_start(ctx)
    if start is None or not _number(expect.get("min_change")):
        return []
    sign = -1.0 if expect.get("direction") == "decreasing" else 1.0
    return [Bound(f"end of window must reach {sign * 100 * expect['min_change']:+.0f}%",
                  value=start + sign * abs(start) * float(expect["min_change"]))]


def _relative(expect: Mapping[str, Any], ctx: Context, lo: float, hi: float, how: Callable[[float, float], float],
              what: str) -> List[Bound]:
    if not ctx.second:
        return []
    return [Bound(f"{what} low", points=tuple((s, how(v, lo)) for s, v in ctx.second)),
            Bound(f"{what} high", points=tuple((s, how(v, hi)) for s, v in ctx.second))]


def _equal(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    off, tol = float(expect.get("offset", 0.0)), float(expect.get("tolerance", 0.0))
    return _relative(expect, ctx, off - tol, off + tol, lambda v, d: v + d, "second target + offset")


def _ratio(expect: Mapping[str, Any], ctx: Context) -> List[Bound]:
    return _relative(expect, ctx, float(expect["min"]), float(expect["max"]), lambda v, r: v * r,
                     "second target x ratio")


RULES: Dict[str, Rule] = {
    "range": _min_max,        # [min, max], either open
    "magnitude": _min_max,    # within a decade of the reference
    "level": _min_max,        # the window's geometric mean stays in [min, max]
    "all_none": _all_none,    # fraction == 1 or == 0
    "constant": _constant,    # one value
    "one_of": _one_of,        # a few values
    "disjoint": _zero,        # no shared sample
    "schedule": _schedule,    # the reference's [low, high] per step, widened by the factor
    "ceiling": _ceiling,      # the reference's high per step, times the factor
    "progress": _progress,    # end/start ratio over the window
    "trend": _trend,          # relative change over the window
    "equal": _equal,          # target[0] - target[1] == offset ± tolerance
    "ratio": _ratio,          # target[0] / target[1] in [min, max]
}


def bounds(template: str, expect: Mapping[str, Any], ctx: Context) -> Optional[List[Bound]]:
    """The lines of an invariant's bound; None when the template has no rule here."""
    rule = RULES.get(template)
    if rule is None:
        return None
    try:
        return [b for b in rule(expect, ctx) if b.value is not None or b.points]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return []  # a hand-edited expect the loader let through: draw no line rather than fail


def windowed_note(template: str) -> str:
    """What a windowed template's lines mean (they bound a summary of the window, not each value)."""
    return {"level": "bound: of the window's geometric mean",
            "progress": "bound: of the window's end, from its start",
            "trend": "bound: of the window's end, from its start"}.get(template, "")


def numeric_span(span: Optional[Sequence[Any]]) -> Optional[Tuple[float, float]]:
    """An invariant's support span as (low, high) when it is numeric, else None."""
    if not span or not all(_number(v) for v in span):
        return None
    return float(min(span)), float(max(span))
