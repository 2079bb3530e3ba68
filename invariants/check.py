"""Evaluate an InvariantSet online, as a traced run's observations arrive."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from invariants.mine import family
from invariants.model import Invariant, InvariantSet
from invariants.registry import template as template_class
from invariants.templates.base import fmt
from invariants.templates.temporal import relative_change

Row = Tuple[int, str, str, Optional[float], Optional[str]]
SEVERITY_RANK = {"warning": 1, "error": 2}
TREND_COVERAGE = 0.75  # fraction of a trend's window a finished run must have observed


@dataclass
class Violation:
    """One invariant that did not hold: the first time it failed, and how often."""

    id: str
    template: str
    target: Tuple[str, ...]
    severity: str
    expected: str
    observed: str
    step: int
    phase: str
    locus: Optional[str]
    family: str
    message: str
    hint: str = ""
    count: int = 1
    deviation: float = 1.0  # how far off, relative to the expectation (picks the telling example)
    ranks: Tuple[int, ...] = ()  # distributed runs: the ranks it concerns (docs/distributed.md)

    def to_json(self) -> Dict[str, Any]:
        doc = {"id": self.id, "template": self.template, "target": list(self.target),
               "severity": self.severity, "expected": self.expected, "observed": self.observed,
               "step": self.step, "phase": self.phase, "locus": self.locus, "family": self.family,
               "message": self.message, "hint": self.hint, "count": self.count}
        if self.ranks:
            doc["ranks"] = list(self.ranks)
        return doc


def _second_phase(inv: Invariant) -> str:
    # Relations compare eval data with *training* data statistics.
    return "train" if inv.target[1].startswith("data.train.") else inv.when.phase


def _in_window(inv: Invariant, step: int) -> bool:
    lo, hi = inv.when.steps
    return step >= lo and (hi is None or step <= hi)


def _phase_matches(inv: Invariant, phase: str) -> bool:
    return inv.when.phase in (phase, "any")


class Checker:
    """Feeds observations through the active invariants; `violations` holds what failed.

    `on_violation(v)` is called the first time each invariant fails (fail-fast uses it)."""

    def __init__(self, invariants: InvariantSet,
                 on_violation: Optional[Callable[[Violation], None]] = None):
        self.active = [i for i in invariants.invariants if i.status != "disabled"]
        self.skipped = len(invariants.invariants) - len(self.active)
        self.on_violation = on_violation
        self.violations: Dict[str, Violation] = {}
        self.checked: set = set()
        self.max_step = -1
        self._by_var: Dict[Tuple[str, str], List[Tuple[Invariant, int]]] = {}
        for inv in self.active:
            phases = ["train", "eval"] if inv.when.phase == "any" else [inv.when.phase]
            for ph in phases:
                self._by_var.setdefault((ph, inv.target[0]), []).append((inv, 0))
            if len(inv.target) == 2:
                self._by_var.setdefault((_second_phase(inv), inv.target[1]), []).append((inv, 1))
        self._latest: Dict[Tuple[str, str], Any] = {}
        self._trend: Dict[str, List[Any]] = {}
        # Looked up once: feed runs at every observed step of the user's run.
        self._classes = {inv.id: template_class(inv.template) for inv in self.active}
        self._stepwise = {i for i, cls in self._classes.items() if getattr(cls, "STEPWISE", False)}
        self._open_trends = [inv for inv in self.active if inv.template == "trend"]

    def feed(self, rows: Sequence[Row]) -> List[Violation]:
        """Evaluates every invariant these rows bear on; returns the new violations."""
        new: List[Violation] = []
        for step, phase, variable, value, text in rows:
            self.max_step = max(self.max_step, step)
            v = value if value is not None else text
            self._latest[(phase, variable)] = v
            for inv, pos in self._by_var.get((phase, variable), ()):
                if pos == 0 and (not _phase_matches(inv, phase) or not _in_window(inv, step)):
                    continue
                if inv.template == "trend":
                    self._trend.setdefault(inv.id, []).append(v)
                    continue
                if len(inv.target) == 2:
                    a = self._latest.get((inv.when.phase, inv.target[0]))
                    b = self._latest.get((_second_phase(inv), inv.target[1]))
                    if a is None or b is None:
                        continue
                    values: Tuple[Any, ...] = (a, b)
                else:
                    values = (v,)
                found = self._evaluate(inv, values, step, phase)
                if found is not None:
                    new.append(found)
        self._close_trends(new)
        return new

    def finish(self) -> List[Violation]:
        """Evaluates what only the end of the run can decide (trends whose window passed)."""
        new: List[Violation] = []
        self._close_trends(new, final=True)
        return new

    def _close_trends(self, new: List[Violation], final: bool = False) -> None:
        still_open = []
        for inv in self._open_trends:
            end = inv.when.steps[1]
            # At the end of the run a window that was mostly covered is decided too: a check
            # observes every 5th step, so its last observation comes before the window's end.
            if end is not None and (self.max_step > end or (final and self.max_step >= TREND_COVERAGE * end)):
                found = self._evaluate(inv, (self._trend.get(inv.id, []),), min(end, self.max_step),
                                       inv.when.phase)
                if found is not None:
                    new.append(found)
            else:
                still_open.append(inv)
        self._open_trends = still_open

    def _evaluate(self, inv: Invariant, values: Tuple[Any, ...], step: int, phase: str) -> Optional[Violation]:
        self.checked.add(inv.id)
        cls = self._classes[inv.id]
        ok = cls.holds(inv.expect, values, step) if inv.id in self._stepwise else cls.holds(inv.expect, values)
        if ok:
            return None
        if inv.id in self.violations:
            self.violations[inv.id].count += 1
            return None
        observed = _observed_text(inv, values, step)
        v = Violation(id=inv.id, template=inv.template, target=tuple(inv.target), severity=inv.severity,
                      expected=cls.expected(inv.expect), observed=observed, step=step, phase=phase,
                      locus=inv.locus, family=family(inv),
                      message=f"{' vs '.join(inv.target)} ({phase}, step {step}): observed {observed}, "
                              f"expected {cls.expected(inv.expect)}")
        v.deviation = _deviation(inv, values)
        self.violations[inv.id] = v
        if self.on_violation is not None:
            self.on_violation(v)
        return v

    def at_or_above(self, level: str) -> List[Violation]:
        rank = SEVERITY_RANK[level]
        return [v for v in self.violations.values() if SEVERITY_RANK.get(v.severity, 0) >= rank]


def _observed_text(inv: Invariant, values: Tuple[Any, ...], step: int = 0) -> str:
    if inv.template == "trend":
        vals = [x for x in values[0] if isinstance(x, float)]
        if len(vals) >= 2:
            return f"changed {100 * relative_change(vals):+.1f}% ({fmt(vals[0])} -> {fmt(vals[-1])})"
        return "too few values"
    if inv.template == "ratio":
        a, b = values
        return f"{fmt(a)} / {fmt(b)} = {fmt(a / b) if isinstance(a, float) and isinstance(b, float) and b else '?'}"
    if inv.template == "equal":
        a, b = values
        return f"{fmt(a)} - {fmt(b)} = {fmt(a - b) if isinstance(a, float) and isinstance(b, float) else '?'}"
    v = values[0]
    if inv.template == "schedule" and isinstance(v, float):
        p = template_class("schedule").point(inv.expect, step)
        if p is not None:
            ref = p[2] if v > p[2] else p[1]
            return f"{fmt(v)} ({v / ref:.3g}x the reference's {fmt(ref)} at step {p[0]})" if ref else fmt(v)
    span = inv.support.span
    if inv.template in ("magnitude", "range") and isinstance(v, float) and span and len(span) == 2 \
            and all(isinstance(x, (int, float)) for x in span):
        lo, hi = float(span[0]), float(span[1])
        if hi > 0 and v > hi:
            return f"{fmt(v)} ({v / hi:.3g}x the reference maximum {fmt(hi)})"
        if lo > 0 and 0 < v < lo:
            return f"{fmt(v)} (1/{lo / v:.3g} of the reference minimum {fmt(lo)})"
    return fmt(v)


def _deviation(inv: Invariant, values: Tuple[Any, ...]) -> float:
    """Distance of the observed value from what was expected, in units of the expectation."""
    v = values[0]
    if not isinstance(v, float) or len(values) != 1:
        return 1.0
    e = inv.expect
    if inv.template == "all_none":
        return abs(v - (1.0 if e["quantifier"] == "all" else 0.0))
    if inv.template in ("range", "magnitude"):
        lo, hi = e.get("min"), e.get("max")
        width = max(abs(hi - lo) if lo is not None and hi is not None else abs(hi or lo or 1.0), 1e-12)
        if hi is not None and v > hi:
            return (v - hi) / width
        if lo is not None and v < lo:
            return (lo - v) / width
    return 1.0
