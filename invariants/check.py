"""Evaluate an InvariantSet online, as a traced run's observations arrive."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from invariants.model import Invariant, InvariantSet
from invariants.observation import Observation
from invariants.registry import template as template_class
from invariants.variables import family_of, read_phase

TREND_COVERAGE = 0.75  # fraction of a windowed invariant's window a finished run must have observed


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
    # a warning made an error because it explains an error-level consequence (explain.py)
    escalated_by: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        doc = {"id": self.id, "template": self.template, "target": list(self.target),
               "severity": self.severity, "expected": self.expected, "observed": self.observed,
               "step": self.step, "phase": self.phase, "locus": self.locus, "family": self.family,
               "message": self.message, "hint": self.hint, "count": self.count}
        if self.ranks:
            doc["ranks"] = list(self.ranks)
        if self.escalated_by:
            doc["escalated_by"] = self.escalated_by
        return doc


def target_phases(inv: Invariant) -> Tuple[str, ...]:
    """The phase each target of an invariant is read in (`any`: train or eval)."""
    return (inv.when.phase,) + tuple(read_phase(t, inv.when.phase) for t in inv.target[1:])


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
        self.active = list(invariants.active())
        self.skipped = len(invariants.invariants) - len(self.active)
        self.on_violation = on_violation
        self.violations: Dict[str, Violation] = {}
        self.checked: Set[str] = set()
        self.max_step = -1
        # Looked up once: feed runs at every observed step of the user's run.
        self._classes = {inv.id: template_class(inv.template) for inv in self.active}
        self._by_var: Dict[Tuple[str, str], List[Tuple[Invariant, int]]] = {}
        for inv in self.active:
            phases = ["train", "eval"] if inv.when.phase == "any" else [inv.when.phase]
            for ph in phases:
                self._by_var.setdefault((ph, inv.target[0]), []).append((inv, 0))
            for pos, (ph, var) in enumerate(zip(target_phases(inv)[1:], inv.target[1:]), 1):
                self._by_var.setdefault((ph, var), []).append((inv, pos))
        self._latest: Dict[Tuple[str, str], Any] = {}
        self._collected: Dict[str, List[Tuple[int, Any]]] = {}  # (step, value) of windowed invariants
        # How close the run came to violating each consequence envelope that held: the
        # smallest factor by which an observation could still have changed (template.margin).
        self.margins: Dict[str, float] = {}
        self._open = [inv for inv in self.active if self._classes[inv.id].WINDOWED]

    def feed(self, rows: Sequence[Observation]) -> List[Violation]:
        """Evaluates every invariant these rows bear on; returns the new violations."""
        new: List[Violation] = []
        for step, phase, variable, value, text in rows:
            self.max_step = max(self.max_step, step)
            v = value if value is not None else text
            self._latest[(phase, variable)] = v
            for inv, pos in self._by_var.get((phase, variable), ()):
                if pos == 0 and (not _phase_matches(inv, phase) or not _in_window(inv, step)):
                    continue
                if self._classes[inv.id].WINDOWED:
                    self._collected.setdefault(inv.id, []).append((step, v))
                    continue
                values: Tuple[Any, ...] = (v,)
                if len(inv.target) > 1:  # a relation: every target's latest value
                    values = tuple(self._latest.get(key) for key in zip(target_phases(inv), inv.target))
                    if any(x is None for x in values):
                        continue
                found = self._evaluate(inv, values, step, phase)
                if found is not None:
                    new.append(found)
        self._close_windows(new)
        return new

    def finish(self) -> List[Violation]:
        """Evaluates what only the end of the run can decide (windows that passed)."""
        new: List[Violation] = []
        self._close_windows(new, final=True)
        return new

    def _close_windows(self, new: List[Violation], final: bool = False) -> None:
        still_open = []
        for inv in self._open:
            end = inv.when.steps[1]
            # At the end of the run a window that was mostly covered is decided too: a check
            # observes every 5th step, so its last observation comes before the window's end.
            if end is not None and (self.max_step > end or (final and self.max_step >= TREND_COVERAGE * end)):
                found = self._evaluate(inv, (self._collected.get(inv.id, []),), min(end, self.max_step),
                                       inv.when.phase)
                if found is not None:
                    new.append(found)
            else:
                still_open.append(inv)
        self._open = still_open

    def _evaluate(self, inv: Invariant, values: Tuple[Any, ...], step: int, phase: str) -> Optional[Violation]:
        self.checked.add(inv.id)
        cls = self._classes[inv.id]
        if cls.holds(inv.expect, values, step):
            m = cls.margin(inv.expect, values, step)
            if m is not None and m < self.margins.get(inv.id, float("inf")):
                self.margins[inv.id] = m
            return None
        if inv.id in self.violations:
            self.violations[inv.id].count += 1
            return None
        observed = cls.observed(inv.expect, values, step, inv.support.span)
        expected = cls.expected(inv.expect)
        v = Violation(id=inv.id, template=inv.template, target=tuple(inv.target), severity=inv.severity,
                      expected=expected, observed=observed, step=step, phase=phase, locus=inv.locus,
                      family=family_of(inv.target[0], inv.when.phase),
                      message=f"{' vs '.join(inv.target)} ({phase}, step {step}): observed {observed}, "
                              f"expected {expected}",
                      deviation=cls.deviation(inv.expect, values) if len(values) == 1 else 1.0)
        self.violations[inv.id] = v
        if self.on_violation is not None:
            self.on_violation(v)
        return v
