"""What every template shares: the protocol, the samples it is fitted on, and the result of
a fit.

A template is a class of class methods (no instances: an invariant's parameters live in its
`expect` mapping) that owns all of its behaviour, so the miner, the checker and the reports
never branch on a template's name:

* `fit(sample, **params)` -> `Fit | Discard`: learn `expect` from the reference runs;
* `holds(expect, values, step)`: does an observation (one value per target) satisfy it;
* `expected(expect)` / `observed(expect, values, step, span)` / `describe_span(span)`:
  the expectation, a violating observation and the reference's evidence, in words;
* `deviation(expect, values)`: how far off a violation is (picks the telling example);
* `margin(expect, values, step)`: for an observation that holds, how many times it could
  still grow or shrink before it violates (consequence envelopes; None elsewhere);
* `check_expect(expect)`: what is wrong with a hand-edited `expect` beyond field types;
* `ARITY` (targets), `EXPECT` (field -> registry.Field), `WINDOWED` (values are collected
  over the step window and decided once at its end), `FIXES_VALUE` (the invariant pins
  its variable to one value, which implies any relation over it), `OPERATOR` (how a
  two-target template joins its targets in words). A windowed template is given, as its
  one value, the list of (step, value) pairs observed in its window;
* `HISTORY`: each target is given as what the run observed of it so far in each phase
  (a mapping phase -> values), so that evaluation can be compared with training;
  `FAMILY`: the cause family its violations point to when it is not its variable's.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from invariants import policy

Value = Union[float, str]


@dataclass(frozen=True)
class Series:
    """Observations of one variable in one phase: per reference run, (step, value) pairs."""

    variable: str
    phase: str
    runs: Tuple[Tuple[Tuple[int, Value], ...], ...]

    @property
    def values(self) -> List[Value]:
        return [v for run in self.runs for _, v in run]

    @property
    def observations(self) -> int:
        return sum(len(r) for r in self.runs)

    @property
    def present_runs(self) -> int:
        return sum(1 for r in self.runs if r)

    @property
    def last_step(self) -> int:
        return max((s for run in self.runs for s, _ in run), default=0)

    @property
    def first_step(self) -> int:
        return min((s for run in self.runs for s, _ in run), default=0)


@dataclass(frozen=True)
class Sample:
    """What a template is fitted on: one Series per target, the number of reference runs,
    whether the variable is a once-per-run fact (its support is counted in runs, not
    observations), and its spread floor (policy.spread_floor)."""

    series: Tuple[Series, ...]
    runs: int
    once: bool = False
    floor: float = 0.0

    @property
    def first(self) -> Series:
        return self.series[0]

    def enough(self) -> bool:
        """Support: MIN_OBSERVATIONS values, or for a once-per-run fact PER_RUN_SUPPORT runs."""
        s = self.first
        return s.observations >= policy.MIN_OBSERVATIONS or (self.once and s.present_runs >= policy.PER_RUN_SUPPORT)


@dataclass(frozen=True)
class Fit:
    """A candidate that survived: what to expect, and the evidence."""

    expect: Dict[str, Any]
    support_span: Optional[Sequence[Any]]
    observations: int
    runs: int


@dataclass(frozen=True)
class Discard:
    """A candidate that is not emitted, and why (shown by `invar infer --explain`)."""

    reason: str


class Template:
    """The protocol every template implements; the defaults suit a one-target template."""

    NAME: ClassVar[str] = ""  # set by registry.register
    ARITY: ClassVar[int] = 1
    EXPECT: ClassVar[Dict[str, Any]] = {}
    WINDOWED: ClassVar[bool] = False
    FIXES_VALUE: ClassVar[bool] = False
    OPERATOR: ClassVar[str] = ""  # a relation's operator in words: `a / b`
    HISTORY: ClassVar[bool] = False
    FAMILY: ClassVar[Optional[str]] = None

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        raise NotImplementedError

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        raise NotImplementedError

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        raise NotImplementedError

    @classmethod
    def observed(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0,
                 span: Optional[Sequence[Any]] = None) -> str:
        """A violating observation in words."""
        return fmt(values[0])

    @classmethod
    def deviation(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> float:
        """Distance of a violating observation from the expectation, in units of it."""
        return 1.0

    @classmethod
    def margin(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> Optional[float]:
        """How many times a holding observation could still change before it violates."""
        return None

    @classmethod
    def describe_span(cls, span: Optional[Sequence[Any]]) -> str:
        """What the reference runs showed, in words (the expectation adds the margin)."""
        if not span:
            return "held"
        if all(isinstance(v, (int, float)) for v in span):
            lo, hi = min(span), max(span)
            return f"was {fmt(float(lo))}" if lo == hi else f"ranged over [{fmt(float(lo))}, {fmt(float(hi))}]"
        return "was " + ", ".join(fmt(v) for v in span)

    @classmethod
    def check_expect(cls, expect: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
        """What is wrong with a loaded `expect` beyond its field types: (message, field)."""
        return None


def spread(series: Series, log: bool = False) -> float:
    """Run-to-run and step-to-step spread: the larger of the std of per-run means and the
    median within-run std (in log10 space for scale variables)."""
    def tr(v: float) -> float:
        return math.log10(v) if log else v

    return spread_of([[tr(float(v)) for _, v in run] for run in series.runs if run])


def spread_of(per_run: Sequence[Sequence[float]]) -> float:
    """The larger of the std of per-run means and the median within-run std."""
    means = [statistics.fmean(r) for r in per_run if r]
    between = statistics.pstdev(means) if len(means) > 1 else 0.0
    within = [statistics.pstdev(r) for r in per_run if len(r) > 1]
    return max(between, statistics.median(within) if within else 0.0)


def window_numbers(pairs: Sequence[Any]) -> List[float]:
    """The numbers among a windowed invariant's collected (step, value) pairs, in order."""
    return [v for _, v in pairs if isinstance(v, float)]


def rounded(v: float) -> float:
    """A fitted bound as written to the file: six significant digits."""
    return float(f"{v:.6g}")


def fmt(v: Any) -> str:
    """A value as a reviewer reads it."""
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)
