"""Templates of facts that hold for virtually every correct pipeline, with no reference run
to fit them on (the built-in set, invariants/builtin.py): a value is finite; an aggregate
of a variable over a step window; evaluation inputs scaled like training inputs.

Their tolerances come from the checked run itself: the evaluation templates compare the
evaluation batches with the training batches seen so far, in units of the training
batches' own batch-to-batch spread and of the training data's own scale.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from invariants import policy
from invariants.registry import NUMBER, Field, register
from invariants.templates.base import Discard, Fit, Sample, Template, fmt, window_numbers

class _BuiltinOnly(Template):
    """A template of the built-in set only: it needs no reference run and is never mined."""

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        return Discard("built-in only: it needs no reference run and is not mined")


def numbers(values: Sequence[Any]) -> List[float]:
    """The finite numbers among observed values (non-finite ones arrive as text)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]


@register("finite")
class Finite(Template):
    """The variable is a finite number: no NaN or infinity in the loss, gradients, parameters."""

    FAMILY = "non_finite"

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        if len(numbers(s.values)) < len(s.values):
            return Discard("falsified: the reference runs have non-finite values")
        return Fit({}, None, s.observations, s.present_runs)

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        return bool(numbers(values[:1]))

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return "a finite number"


AGGREGATES = {"mean": statistics.fmean, "max": max, "min": min}


@register("window")
class Window(_BuiltinOnly):
    """Over its step window, an aggregate of the variable (`statistic`: the mean, the largest
    or the smallest observation) lies within [min, max] (either may be open; `strict`:
    strictly). Decided once, at the window's end; a window with no number holds (no evidence)."""

    EXPECT = {
        "statistic": Field((str,), doc="the aggregate over the window", choices=tuple(AGGREGATES)),
        "min": Field(NUMBER, nullable=True, doc="lower bound (null: none)"),
        "max": Field(NUMBER, nullable=True, doc="upper bound (null: none)"),
        "strict": Field((bool,), required=False, doc="bounds exclude their value (default false)"),
    }
    WINDOWED = True

    @classmethod
    def aggregate(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> Optional[float]:
        """The window's aggregate (None: no number observed in it)."""
        vals = window_numbers(values[0])
        return AGGREGATES[expect["statistic"]](vals) if vals else None

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        a = cls.aggregate(expect, values)
        if a is None:
            return True
        lo, hi, strict = expect.get("min"), expect.get("max"), bool(expect.get("strict"))
        above = lo is None or (a > lo if strict else a >= lo)
        below = hi is None or (a < hi if strict else a <= hi)
        return above and below

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        lo, hi = expect.get("min"), expect.get("max")
        gt, lt = (">", "<") if expect.get("strict") else (">=", "<=")
        bounds = [f"{gt} {fmt(lo)}" if lo is not None else "", f"{lt} {fmt(hi)}" if hi is not None else ""]
        return f"{expect['statistic']} over the window {' and '.join(b for b in bounds if b) or 'anything'}"

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        a = cls.aggregate(expect, values)
        n = len(window_numbers(values[0]))
        return f"{expect['statistic']} {fmt(a)} over {n} observation(s)" if a is not None else "no value"

    @classmethod
    def check_expect(cls, expect: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
        if expect.get("min") is None and expect.get("max") is None:
            return "give min or max (or both): with neither, nothing could fail", "expect.min"
        return None


def _phases(value: Any) -> Tuple[List[float], List[float]]:
    """(evaluation, training) numbers of a HISTORY target's mapping phase -> values."""
    value = value if isinstance(value, Mapping) else {}
    return numbers(value.get("eval", ())), numbers(value.get("train", ()))


def _spread(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


class _AgainstTraining(_BuiltinOnly):
    """Evaluation batches against the training batches seen so far (HISTORY targets): a
    subclass measures them (None while there is too little to compare) and says what holds."""

    HISTORY = True

    @classmethod
    def measure(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> Optional[Tuple[float, ...]]:
        raise NotImplementedError

    @classmethod
    def within(cls, m: Tuple[float, ...]) -> bool:
        raise NotImplementedError

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        m = cls.measure(expect, values)
        return m is None or cls.within(m)


@register("eval_shift")
class EvalShift(_AgainstTraining):
    """In evaluation, a statistic of the model input (target[0], e.g. a channel mean) lies
    where the training batches put it: its mean over the evaluation batches so far differs
    from its mean over the training batches so far by at most `noise` times the batches'
    own spread (training and evaluation together) or `scales` times the training data's own
    scale (target[1], e.g. that channel's standard deviation in training), whichever is
    larger. Undecided before MIN_TRAIN_BATCHES training batches."""

    ARITY = 2
    OPERATOR = "in units of"
    EXPECT = {"noise": Field(NUMBER, doc="allowed shift in batch-to-batch spreads"),
              "scales": Field(NUMBER, doc="allowed shift in units of the training scale (target[1])")}

    @classmethod
    def measure(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> Optional[Tuple[float, float, float]]:
        """(shift, tolerance, training scale), or None while there is too little to compare."""
        ev, tr = _phases(values[0])
        _, scale = _phases(values[1])
        if not ev or len(tr) < policy.MIN_TRAIN_BATCHES or not scale:
            return None
        unit = statistics.fmean(scale)
        noise = math.hypot(_spread(tr), _spread(ev))
        shift = statistics.fmean(ev) - statistics.fmean(tr)
        return shift, max(expect["noise"] * noise, expect["scales"] * unit), unit

    @classmethod
    def within(cls, m: Tuple[float, ...]) -> bool:
        return abs(m[0]) <= m[1]

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return (f"the training batches' value within {fmt(float(expect['noise']))} batch spreads or "
                f"{fmt(float(expect['scales']))} training scale(s)")

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        m = cls.measure(expect, values)
        if m is None:
            return "too few batches"
        ev, tr = _phases(values[0])
        shift, tol, unit = m
        units = f" ({shift / unit:+.3g} training scales)" if unit > 0 else ""
        return (f"evaluation {fmt(statistics.fmean(ev))} vs training {fmt(statistics.fmean(tr))}: shifted by "
                f"{fmt(shift)}{units}, allowed {fmt(tol)}")

    @classmethod
    def deviation(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> float:
        m = cls.measure(expect, values)
        return abs(m[0]) / m[1] if m is not None and m[1] > 0 else 1.0


@register("eval_scale")
class EvalScale(_AgainstTraining):
    """In evaluation, a scale statistic of the model input (e.g. a channel's standard
    deviation) keeps its training value: the ratio of its mean over the evaluation batches
    so far to its mean over the training batches so far is within a factor of `factor`, or
    of `noise` times the batches' own spread in log units, whichever is wider. Undecided
    before MIN_TRAIN_BATCHES training batches."""

    EXPECT = {"noise": Field(NUMBER, doc="allowed log-ratio in batch-to-batch spreads (log units)"),
              "factor": Field(NUMBER, doc="allowed factor between evaluation and training")}

    @classmethod
    def measure(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> Optional[Tuple[float, float]]:
        """(evaluation / training, the largest factor allowed), or None while undecided."""
        ev, tr = (([v for v in vs if v > 0]) for vs in _phases(values[0]))
        if not ev or len(tr) < policy.MIN_TRAIN_BATCHES:
            return None
        noise = math.hypot(_spread([math.log(v) for v in tr]), _spread([math.log(v) for v in ev]))
        allowed = max(math.exp(expect["noise"] * noise), float(expect["factor"]))
        return statistics.fmean(ev) / statistics.fmean(tr), allowed

    @classmethod
    def within(cls, m: Tuple[float, ...]) -> bool:
        return 1 / m[1] <= m[0] <= m[1]

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return (f"the training batches' value within a factor of {fmt(float(expect['factor']))} "
                f"(or {fmt(float(expect['noise']))} batch spreads)")

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        m = cls.measure(expect, values)
        return "too few batches" if m is None else f"{m[0]:.3g}x the training batches' value (allowed x{m[1]:.3g})"

    @classmethod
    def deviation(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> float:
        m = cls.measure(expect, values)
        return abs(math.log(m[0])) / math.log(m[1]) if m is not None and m[0] > 0 and m[1] > 1 else 1.0

    @classmethod
    def check_expect(cls, expect: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
        if expect["factor"] < 1:
            return f"factor must be >= 1, got {expect['factor']!r}", "expect.factor"
        return None
