"""Quantified templates over a block's parameters, and disjointness of data sets."""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

from invariants.registry import Field, register
from invariants.templates.base import Discard, Fit, Sample, Template, fmt


@register("all_none")
class AllNone(Template):
    """A per-block fraction is 1 (`all`) or 0 (`none`): every trainable parameter gets a
    gradient, every trainable parameter is in the optimizer, no parameter is frozen."""

    EXPECT = {"quantifier": Field((str,), doc="'all' (fraction == 1) or 'none' (== 0)",
                                choices=("all", "none"))}

    @staticmethod
    def _want(expect: Mapping[str, Any]) -> float:
        return 1.0 if expect["quantifier"] == "all" else 0.0

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        values = set(s.values)
        if s.present_runs < sample.runs:
            return Discard(f"seen in {s.present_runs} of {sample.runs} runs")
        if values == {1.0}:
            return Fit({"quantifier": "all"}, [1.0], s.observations, s.present_runs)
        if values == {0.0}:
            return Fit({"quantifier": "none"}, [0.0], s.observations, s.present_runs)
        return Discard(f"falsified: fractions {', '.join(fmt(v) for v in sorted(values)[:4])}")

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        v = values[0]
        return isinstance(v, float) and abs(v - cls._want(expect)) < 1e-9

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return "== 1 (all)" if expect["quantifier"] == "all" else "== 0 (none)"

    @classmethod
    def deviation(cls, expect: Mapping[str, Any], values: Sequence[Any]) -> float:
        v = values[0]
        return abs(v - cls._want(expect)) if isinstance(v, float) else 1.0


@register("disjoint")
class Disjoint(Template):
    """Two data sets share no sample: the overlap count is 0."""

    @classmethod
    def fit(cls, sample: Sample, **params: Any) -> Union[Fit, Discard]:
        s = sample.first
        if any(v != 0.0 for v in s.values):
            return Discard("falsified: the reference runs share samples between the data sets")
        if s.present_runs < sample.runs:
            return Discard(f"seen in {s.present_runs} of {sample.runs} runs")
        return Fit({}, [0.0], s.observations, s.present_runs)

    @classmethod
    def holds(cls, expect: Mapping[str, Any], values: Sequence[Any], step: int = 0) -> bool:
        return values[0] == 0.0

    @classmethod
    def expected(cls, expect: Mapping[str, Any]) -> str:
        return "== 0 shared samples"
