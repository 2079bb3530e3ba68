"""Quantified templates over a block's parameters, and disjointness of data sets."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from invariants.registry import Field, register
from invariants.templates.base import Discard, Fit, Series, fmt


@register("all_none")
class AllNone:
    """A per-block fraction is 1 (`all`) or 0 (`none`): every trainable parameter gets a
    gradient, every trainable parameter is in the optimizer, no parameter is frozen."""

    ARITY = 1
    EXPECT = {"quantifier": Field((str,), doc="'all' (fraction == 1) or 'none' (== 0)",
                                choices=("all", "none"))}

    @staticmethod
    def fit(series: Series, min_runs: int) -> Fit | Discard:
        values = set(series.values)
        if series.present_runs < min_runs:
            return Discard(f"seen in {series.present_runs} of {min_runs} runs")
        if values == {1.0}:
            return Fit({"quantifier": "all"}, [1.0], series.observations, series.present_runs)
        if values == {0.0}:
            return Fit({"quantifier": "none"}, [0.0], series.observations, series.present_runs)
        return Discard(f"falsified: fractions {', '.join(fmt(v) for v in sorted(values)[:4])}")

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        v = values[0]
        want = 1.0 if expect["quantifier"] == "all" else 0.0
        return isinstance(v, float) and abs(v - want) < 1e-9

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        return "== 1 (all)" if expect["quantifier"] == "all" else "== 0 (none)"


@register("disjoint")
class Disjoint:
    """Two data sets share no sample: the overlap count is 0."""

    ARITY = 1
    EXPECT: dict = {}

    @staticmethod
    def fit(series: Series, min_runs: int) -> Fit | Discard:
        if any(v != 0.0 for v in series.values):
            return Discard("falsified: the reference runs share samples between the data sets")
        if series.present_runs < min_runs:
            return Discard(f"seen in {series.present_runs} of {min_runs} runs")
        return Fit({}, [0.0], series.observations, series.present_runs)

    @staticmethod
    def holds(expect: Mapping[str, Any], values: Sequence[Any]) -> bool:
        return values[0] == 0.0

    @staticmethod
    def expected(expect: Mapping[str, Any]) -> str:
        return "== 0 shared samples"
