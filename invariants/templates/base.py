"""What every template shares: the samples it is fitted on and the result of a fit."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

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

    def numeric(self) -> bool:
        return all(isinstance(v, float) for v in self.values)


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


def spread(series: Series, log: bool = False) -> float:
    """Run-to-run and step-to-step spread: the larger of the std of per-run means and the
    median within-run std (in log10 space for scale variables)."""
    def tr(v: float) -> float:
        return math.log10(v) if log else v

    per_run = [[tr(float(v)) for _, v in run] for run in series.runs if run]
    means = [statistics.fmean(r) for r in per_run]
    between = statistics.pstdev(means) if len(means) > 1 else 0.0
    within = [statistics.pstdev(r) for r in per_run if len(r) > 1]
    return max(between, statistics.median(within) if within else 0.0)


def fmt(v: Any) -> str:
    """A value as a reviewer reads it."""
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)

