"""Evaluate an InvariantSet online, as a traced run's observations arrive."""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from invariants.model import Invariant, InvariantSet
from invariants.observation import Observation
from invariants.registry import template as template_class
from invariants.variables import block_of, family_of, read_phase

PHASES = ("train", "eval")  # the phases observations are made in

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


def trigger_keys(inv: Invariant, history: bool) -> List[Tuple[str, str, int]]:
    """(phase, variable, position) of every observation an invariant is evaluated on: its
    targets in their phases (`any`: both); with `history` (the template compares phases)
    every target in both phases, position 0 only for the first target in its own phase."""
    own = ("train", "eval") if inv.when.phase == "any" else (inv.when.phase,)
    keys = [(ph, inv.target[0], 0) for ph in own]
    if history:
        keys += [(ph, t, 1) for t in inv.target for ph in PHASES if (ph, t, 0) not in keys]
    else:
        keys += [(ph, t, pos) for pos, (ph, t) in enumerate(zip(target_phases(inv)[1:], inv.target[1:]), 1)]
    return keys


def _in_window(inv: Invariant, step: int) -> bool:
    lo, hi = inv.when.steps
    return step >= lo and (hi is None or step <= hi)


def _phase_matches(inv: Invariant, phase: str) -> bool:
    return inv.when.phase in (phase, "any")


class Checker:
    """Feeds observations through the active invariants; `violations` holds what failed.

    An invariant that quantifies over variables (`block.*.no_grad_fraction`) is evaluated
    per variable it matches, as an instance with its own id (`ID[layer2.0]`); a variable
    name is matched against the patterns once, the first time it is observed.
    `on_violation(v)` is called the first time each invariant (instance) fails."""

    def __init__(self, invariants: InvariantSet,
                 on_violation: Optional[Callable[[Violation], None]] = None):
        self.active = list(invariants.active())
        self.skipped = len(invariants.invariants) - len(self.active)
        self.on_violation = on_violation
        self.violations: Dict[str, Violation] = {}
        self.checked: Set[str] = set()  # ids of the file's entries (not of instances)
        self.evaluations: Counter = Counter()  # entry id -> observations it was evaluated on
        self.max_step = -1
        self._classes: Dict[str, Any] = {}
        self._parent: Dict[str, str] = {}  # instance id -> the quantified entry's id
        self._by_var: Dict[Tuple[str, str], List[Tuple[Invariant, int]]] = {}
        self._latest: Dict[Tuple[str, str], Any] = {}
        self._collected: Dict[str, List[Tuple[int, Any]]] = {}  # (step, value) of windowed invariants
        self._history: Dict[Tuple[str, str], List[Any]] = {}  # every value, for HISTORY templates
        # How close the run came to violating each consequence envelope that held: the
        # smallest factor by which an observation could still have changed (template.margin).
        self.margins: Dict[str, float] = {}
        self._open: List[Invariant] = []
        self._patterns: List[Invariant] = []
        self._indexed: Set[str] = set()  # variable names matched against the patterns
        for inv in self.active:
            if inv.quantified:
                self._patterns.append(inv)
            else:
                self._add(inv, inv.id)

    def _add(self, inv: Invariant, parent: str) -> None:
        # Looked up once: feed runs at every observed step of the user's run.
        cls = self._classes[inv.id] = template_class(inv.template)
        self._parent[inv.id] = parent
        for ph, var, pos in trigger_keys(inv, cls.HISTORY):
            self._by_var.setdefault((ph, var), []).append((inv, pos))
            if cls.HISTORY:
                history = self._history.setdefault((ph, var), [])
                if not history and (ph, var) in self._latest:  # seen before the pattern matched
                    history.append(self._latest[(ph, var)])
        if cls.WINDOWED:
            self._open.append(inv)

    def _index(self, variable: str) -> None:
        """Instances of the quantified invariants whose first target matches `variable`."""
        self._indexed.add(variable)
        for inv in self._patterns:
            instance = inv.instance(variable)
            if instance is not None:
                locus = inv.locus or block_of(instance.target[0])
                self._add(dataclasses.replace(instance, locus=locus), inv.id)

    def feed(self, rows: Sequence[Observation]) -> List[Violation]:
        """Evaluates every invariant these rows bear on; returns the new violations."""
        new: List[Violation] = []
        for step, phase, variable, value, text in rows:
            self.max_step = max(self.max_step, step)
            v = value if value is not None else text
            key = (phase, variable)
            if self._patterns and variable not in self._indexed:
                self._index(variable)  # before `_latest` holds v: a new history starts with it below
            self._latest[key] = v
            history = self._history.get(key)
            if history is not None:
                history.append(v)
            for inv, pos in self._by_var.get(key, ()):
                if pos == 0 and (not _phase_matches(inv, phase) or not _in_window(inv, step)):
                    continue
                cls = self._classes[inv.id]
                if cls.WINDOWED:
                    if pos == 0:
                        self._collected.setdefault(inv.id, []).append((step, v))
                    continue
                values = self._values(inv, cls, v)
                if values is None:
                    continue
                found = self._evaluate(inv, values, step, phase)
                if found is not None:
                    new.append(found)
        self._close_windows(new)
        return new

    def _values(self, inv: Invariant, cls: Any, v: Any) -> Optional[Tuple[Any, ...]]:
        """What the template is given: each target's history per phase (HISTORY), every
        target's latest value (a relation; None while one is missing), or the value."""
        if cls.HISTORY:
            return tuple({ph: self._history.get((ph, t), []) for ph in PHASES} for t in inv.target)
        if len(inv.target) == 1:
            return (v,)
        values = tuple(self._latest.get(key) for key in zip(target_phases(inv), inv.target))
        return None if any(x is None for x in values) else values

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
        self.checked.add(self._parent[inv.id])
        self.evaluations[self._parent[inv.id]] += 1
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
                      family=cls.FAMILY or family_of(inv.target[0], inv.when.phase),
                      message=f"{' vs '.join(inv.target)} ({phase}, step {step}): observed {observed}, "
                              f"expected {expected}",
                      deviation=cls.deviation(inv.expect, values) if len(values) == 1 else 1.0)
        self.violations[inv.id] = v
        if self.on_violation is not None:
            self.on_violation(v)
        return v
