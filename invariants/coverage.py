"""What a check could not look at, and why: every active invariant the run never evaluated,
and, for the error-level ones whose variables were never recorded at all, the entries that
make the verdict "incomplete" (a check that could not look is never "ok")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

from invariants.check import target_phases
from invariants.model import Invariant, InvariantSet
from invariants.registry import template
from invariants.variables import block_of, family_of

# Why an active invariant was never evaluated (`unchecked`), in the order reports list them.
NEVER_OBSERVED = "never_observed"
WINDOW_NOT_REACHED = "window_not_reached"
NOT_EVALUATED = "not_evaluated"
NOT_APPLICABLE = "not_applicable"
REASONS = {NEVER_OBSERVED: "variable never observed in that phase",
           WINDOW_NOT_REACHED: "step window not reached",
           NOT_EVALUATED: "observed only outside the step window",
           # a built-in invariant about something this pipeline does not have (no evaluation
           # loop, no classification loss): nothing to check, and no gap in the check
           NOT_APPLICABLE: "built-in, about variables this pipeline does not have"}
Coverage = Mapping[Tuple[str, str], Tuple[int, int]]  # (phase, variable) -> (first, last) step
UNOBSERVED_HINT = ("these variables were never recorded in this run, so the invariants on them could not be "
                   "checked: the pipeline may no longer have them (a removed DataLoader or evaluation loop, "
                   "renamed modules: re-run `invar infer`, or pass the tracing options the invariant file "
                   "was learned with), or the tracer cannot see them here; pass --allow-unchecked to accept "
                   "a check that could not look at them")


@dataclass(frozen=True)
class Unchecked:
    """An active invariant the run never evaluated: `reason` is one of REASONS."""

    id: str
    severity: str
    reason: str
    detail: str
    family: str = "other"
    locus: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "reason": self.reason, "detail": self.detail}


@dataclass
class Unobserved:
    """Error-level invariants of one cause family that could not be evaluated because their
    variables were never recorded: a root-cause-like entry of an incomplete verdict."""

    family: str
    phase: str
    unchecked: List[Unchecked] = field(default_factory=list)
    hint: str = UNOBSERVED_HINT

    @property
    def loci(self) -> List[str]:
        return sorted({u.locus for u in self.unchecked if u.locus})

    @property
    def summary(self) -> str:
        where = f" in {len(self.loci)} block(s): {', '.join(self.loci[:6])}" + \
                (f" (+{len(self.loci) - 6} more)" if len(self.loci) > 6 else "") if self.loci else ""
        return (f"{len(self.unchecked)} error-level {self.family.replace('_', ' ')} invariant(s){where} never "
                f"observed in {self.phase} — e.g. {self.unchecked[0].detail}")

    def to_json(self) -> Dict[str, Any]:
        return {"family": self.family, "phase": self.phase, "loci": self.loci, "summary": self.summary,
                "invariants": [u.id for u in self.unchecked], "hint": self.hint}


def unchecked(invariants: InvariantSet, checked: Collection[str], seen: Coverage) -> List[Unchecked]:
    """Why each active invariant outside `checked` was not evaluated, from what the run
    observed (`seen`): its variable never appeared in its phase, the run ended before its
    step window (or before the step the reference first observed it at), or the variable
    appeared only outside that window."""
    last = max((hi for _, hi in seen.values()), default=-1)
    return [_why_unchecked(inv, seen, last) for inv in invariants.active() if inv.id not in checked]


def unobserved(items: List[Unchecked]) -> List[Unobserved]:
    """The error-level never-observed invariants, grouped by family and phase."""
    groups: Dict[Tuple[str, str], Unobserved] = {}
    for u in items:
        if u.severity == "error" and u.reason == NEVER_OBSERVED:
            phase = u.id.rsplit("@", 1)[-1]
            groups.setdefault((u.family, phase), Unobserved(u.family, phase)).unchecked.append(u)
    return sorted(groups.values(), key=lambda g: (-len(g.unchecked), g.family, g.phase))


def _span(seen: Coverage, phase: str, variable: str) -> Optional[Tuple[int, int]]:
    spans = [seen[(p, variable)] for p in (("train", "eval") if phase == "any" else (phase,))
             if (p, variable) in seen]
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None


def _why_unchecked(entry: Invariant, seen: Coverage, last: int) -> Unchecked:
    cls = template(entry.template)

    def why(reason: str, detail: str) -> Unchecked:
        return Unchecked(entry.id, entry.severity, reason, detail,
                         cls.FAMILY or family_of(entry.target[0], entry.when.phase),
                         entry.locus or (None if entry.quantified else block_of(entry.target[0])))

    phase, (lo, hi) = entry.when.phase, entry.when.steps
    first_seen = entry.support.first
    inv = entry
    if entry.quantified:  # judged by the first variable it matched (none: never observed)
        inv = next((i for i in map(entry.instance, sorted({v for _, v in seen})) if i is not None
                    and _span(seen, phase, i.target[0]) is not None), entry)
    for ph, var in zip(target_phases(inv), inv.target):
        if _span(seen, ph, var) is None:
            if first_seen is not None and last < first_seen:
                return why(WINDOW_NOT_REACHED, f"the reference first observed it at step {first_seen}; the "
                                               f"run's last observation is at step {last}")
            where = "train or eval" if ph == "any" else ph
            what = f"no variable matching {var} was observed" if inv.quantified else f"{var} was never observed"
            return why(NOT_APPLICABLE if entry.origin == "builtin" else NEVER_OBSERVED, f"{what} in {where}")
    first, final = _span(seen, phase, inv.target[0])  # type: ignore[misc]
    window = f"steps {lo}-{'end' if hi is None else hi}"
    if cls.WINDOWED and hi is not None:
        return why(WINDOW_NOT_REACHED, f"decided at step {hi}; the run's last observation is at step {last}")
    if final < lo:
        return why(WINDOW_NOT_REACHED, f"applies to {window}; {inv.target[0]} was last observed at step {final}")
    return why(NOT_EVALUATED, f"applies to {window}; {inv.target[0]} was observed at steps {first}-{final}")
