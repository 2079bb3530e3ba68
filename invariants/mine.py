"""Mine invariants from reference runs: instantiate templates over the traced variables,
keep the candidates that are never falsified *and* justified by enough support, suppress
the implied ones, and remember why every other candidate was discarded.

Which candidates a variable gets, and with what parameters, is the policy's
(invariants/policy.py); how each is fitted is its template's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from invariants import policy
from invariants.model import Invariant, InvariantSet, SCHEMA_VERSION, Support, When, make_id
from invariants.observation import Observation
from invariants.registry import template as template_class
from invariants.templates.base import Discard, Fit, Sample, Series
from invariants.variables import IMPLIED_BY, block_of, describe, dynamics, kind_of, once_per_run, read_phase

Key = Tuple[str, str]  # (phase, variable)


@dataclass
class MineResult:
    """The invariants, and every candidate that was not emitted with its reason."""

    invariants: List[Invariant]
    discarded: List[Tuple[str, str]] = field(default_factory=list)
    suppressed: int = 0
    seconds: float = 0.0


def build_series(runs: Sequence[Iterable[Observation]]) -> Dict[Key, Series]:
    """(phase, variable) -> Series over all runs (empty tuples where a run lacks it)."""
    table: Dict[Key, List[List[Tuple[int, Any]]]] = {}
    for i, rows in enumerate(runs):
        for step, phase, variable, value, text in rows:
            per_run = table.setdefault((phase, variable), [[] for _ in runs])
            per_run[i].append((step, value if value is not None else text))
    return {k: Series(k[1], k[0], tuple(tuple(r) for r in v)) for k, v in table.items()}


class _Miner:
    def __init__(self, series: Dict[Key, Series], n_runs: int):
        self.series = series
        self.n_runs = n_runs
        self.out: Dict[str, Invariant] = {}
        self.discarded: List[Tuple[str, str]] = []
        self.suppressed = 0
        self._contrast: Dict[Tuple[str, str], bool] = {}

    def emit(self, name: str, target: Tuple[str, ...], phase: str, result: Union[Fit, Discard],
             severity: str, window_end: Optional[int], what: str, first: Optional[int] = None) -> None:
        iid = make_id(name, target, phase)
        if isinstance(result, Discard):
            self.discarded.append((iid, result.reason))
            return
        cls = template_class(name)
        span = list(result.support_span) if result.support_span is not None else None
        self.out[iid] = Invariant(
            id=iid, template=name, target=target, expect=dict(result.expect),
            when=When(phase=phase, steps=(0, window_end)), severity=severity, status="proposed",
            support=Support(runs=result.runs, observations=result.observations, span=span, first=first),
            why=f"{what} {cls.describe_span(span)} across the reference runs ({result.runs} runs, "
                f"{result.observations} observations); expected: {cls.expected(result.expect)}.",
            locus=block_of(target[0]))

    def contrast(self, family: str, phase: str) -> bool:
        """Whether the reference's variables of this family take more than one value."""
        if (family, phase) not in self._contrast:
            values = {round(float(v), 9) for (ph, var), s in self.series.items()
                      if ph == phase and kind_of(var, ph).family == family for v in s.values if isinstance(v, float)}
            self._contrast[(family, phase)] = len(values) > 1
        return self._contrast[(family, phase)]

    def floor(self, s: Series) -> float:
        """The variable's own spread floor (policy.spread_floor)."""
        companion = self.series.get((s.phase, s.variable.rsplit(".", 1)[0] + ".std"))
        return policy.spread_floor(s.variable, s.values, companion.values if companion is not None else None)

    def single(self, s: Series) -> None:
        """Mines the candidates the policy lists for this variable's kind."""
        k = kind_of(s.variable, s.phase)
        target, phase = (s.variable,), s.phase
        if k.kind == "skip":
            self.discarded.append((make_id("*", target, phase), "not mined: recorded for reports only"))
            return
        if k.family in policy.CONTRAST_FAMILIES and not self.contrast(k.family, s.phase):
            self.discarded.append((make_id("*", target, phase), "not mined: every block has the same value "
                                                                "(a global setting: see optim.*)"))
            return
        once, state = once_per_run(s.variable), dynamics(s.variable, s.phase)
        sample = Sample((s,), self.n_runs, once=once)
        what = f"In {phase}, {describe(s.variable)}"
        for candidate in policy.CANDIDATES[k.kind]:
            if not candidate.applies(s.variable, k.family):
                continue
            while candidate is not None:
                params = {n: self.floor(s) if v == policy.OWN_SCALE else v for n, v in candidate.params.items()}
                result = template_class(candidate.template).fit(sample, **params)
                severity = candidate.severity or k.severity
                if isinstance(result, Discard) and candidate.fallback is not None:
                    self.discarded.append((make_id(candidate.template, target, phase), result.reason))
                    candidate = candidate.fallback
                    continue
                self.emit(candidate.template, target, phase, result, severity,
                          policy.window_end(candidate, severity, once, state, s.last_step), what, s.first_step)
                candidate = None

    def relations(self) -> None:
        """The two-variable candidates of policy.RELATIONS."""
        for rel in policy.RELATIONS:
            first = next((v for v in rel.first if (rel.phase, v) in self.series), None)
            a = self.series.get((rel.phase, first or ""))
            b = self.series.get((read_phase(rel.second, rel.phase), rel.second))
            if a is None or b is None:
                continue
            assert first is not None
            cls = template_class(rel.template)
            result = cls.fit(Sample((a, b), self.n_runs), floor=rel.floor)
            what = f"{describe(first)} {cls.OPERATOR} {describe(rel.second)}"
            self.emit(rel.template, (first, rel.second), rel.phase, result, rel.severity, None, what,
                      max(a.first_step, b.first_step))

    def suppress(self) -> None:
        """Drops invariants implied by others (Daikon's implication suppression): a relation
        between variables that are constant, a variable that follows from a constant one."""
        fixed = {(i.target[0], i.when.phase) for i in self.out.values() if template_class(i.template).FIXES_VALUE}
        implied: Dict[str, str] = {}
        for iid, inv in self.out.items():
            phase = inv.when.phase
            if len(inv.target) == 2 and all((t, phase) in fixed for t in inv.target):
                implied[iid] = "implied by constant values of both targets"
            elif len(inv.target) == 1 and (IMPLIED_BY.get(inv.target[0]), phase) in fixed:
                implied[iid] = f"implied by constant {IMPLIED_BY[inv.target[0]]}"
        for iid, reason in implied.items():
            del self.out[iid]
            self.discarded.append((iid, reason))
        self.suppressed = len(implied)


def mine(runs: Sequence[Iterable[Observation]], meta: Optional[Dict[str, Any]] = None
         ) -> Tuple[InvariantSet, MineResult]:
    """Mines an InvariantSet from the observations of each reference run."""
    start = time.perf_counter()
    series = build_series(runs)
    m = _Miner(series, len(runs))
    for key in sorted(series):
        m.single(series[key])
    m.relations()
    m.suppress()
    invariants = sorted(m.out.values(), key=lambda i: (i.locus or "", i.template, i.id))
    result = MineResult(invariants, m.discarded, m.suppressed, time.perf_counter() - start)
    return InvariantSet(schema=SCHEMA_VERSION, meta=dict(meta or {}), invariants=tuple(invariants)), result
