"""The built-in invariant set: facts that hold for virtually every correct training pipeline,
checked with no reference run (`invar check SCRIPT` without `--against`, or `--against
builtin`), and kept in every learned file so that moving from reference-free checking to
learned invariants loses none of them.

The set is an ordinary invariant file shipped with invar (`builtin.yaml`, `invar export
builtin -o builtin.md`): every entry has `origin: builtin`, a rationale and its known
legitimate exceptions in `why`, and targets that quantify over variables where a fact is
about every block (`block.*.no_grad_fraction`). docs/builtin.md explains each one.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Sequence, Tuple

from invariants import invfile
from invariants.check import Checker
from invariants.model import Invariant, InvariantSet, Support
from invariants.observation import Observation

if TYPE_CHECKING:
    from invariants.allow import Allow
    from invariants.report import CheckReport

NAME = "builtin"  # what `--against` and `export` accept for the shipped set
PATH = Path(__file__).with_name("builtin.yaml")
NOTE = ("checked against the built-in invariant set (no reference run; docs/builtin.md): bugs relative to a "
        "previous run (learning rate, batch size, input scale drifts) need `invar infer` and `--against`")


@functools.lru_cache(maxsize=1)
def builtin_set() -> InvariantSet:
    """The shipped built-in set (read once per process)."""
    return invfile.load(PATH)


def is_builtin_source(source: str) -> bool:
    """Whether an `--against`/`export` argument names the built-in set."""
    return source == NAME


@dataclass
class Confirmation:
    """What the reference runs said of each built-in invariant: confirmed (evaluated and held
    in every run that observed it), violated (a legitimate exception of this pipeline: the
    first violation's message), or not observed (the pipeline has no such variable)."""

    confirmed: List[str] = field(default_factory=list)
    violated: Dict[str, str] = field(default_factory=dict)
    not_observed: List[str] = field(default_factory=list)
    observations: Dict[str, Tuple[int, int]] = field(default_factory=dict)  # id -> (runs, evaluations)

    def lines(self) -> List[str]:
        """What `invar infer` prints: one line per group, the violated ones named."""
        out = [f"built-in invariants: {len(self.confirmed)} confirmed by the reference runs, "
               f"{len(self.violated)} violated by them (kept, disabled), {len(self.not_observed)} not "
               f"applicable (variables this pipeline does not have)"]
        out += [f"  disabled {iid}: {why}" for iid, why in sorted(self.violated.items())]
        return out


def confirm(builtins: InvariantSet, runs: Sequence[Iterable[Observation]]) -> Confirmation:
    """Evaluates the built-in set on each reference run's observations."""
    checkers = []
    for rows in runs:
        checker = Checker(builtins)
        checker.feed(list(rows))
        checker.finish()
        checkers.append(checker)
    result = Confirmation()
    for inv in builtins.active():
        seen = [c for c in checkers if inv.id in c.checked]
        failing = [vs for vs in ([v for v in c.violations.values() if _entry_id(v.id) == inv.id] for c in checkers)
                   if vs]
        result.observations[inv.id] = (len(seen), sum(c.evaluations[inv.id] for c in seen))
        if failing:
            first = min((v for vs in failing for v in vs), key=lambda v: (v.step, v.id))
            result.violated[inv.id] = f"{first.message}; in {len(failing)} of {len(checkers)} runs"
        elif seen:
            result.confirmed.append(inv.id)
        else:
            result.not_observed.append(inv.id)
    return result


def _entry_id(violation_id: str) -> str:
    """The file entry a violation belongs to (an instance `ID[block]` belongs to `ID`)."""
    return violation_id.split("[", 1)[0]


def kept(builtins: InvariantSet, confirmation: Confirmation) -> List[Invariant]:
    """The built-in entries as a learned file keeps them: confirmed ones with the reference
    runs as their support, violated ones disabled with the reason, the rest unchanged."""
    out = []
    for inv in builtins.invariants:
        runs, evaluations = confirmation.observations.get(inv.id, (0, 0))
        if inv.id in confirmation.violated:
            inv = dataclasses.replace(inv, status="disabled",
                                      why=f"{inv.why} Disabled: the reference runs violate it "
                                          f"({confirmation.violated[inv.id]}).")
        elif inv.id in confirmation.confirmed:
            inv = dataclasses.replace(inv, support=Support(runs=runs, observations=evaluations, span=None))
        out.append(inv)
    return out


def with_builtins(learned: InvariantSet, runs: Sequence[Iterable[Observation]]
                  ) -> Tuple[InvariantSet, Confirmation]:
    """A learned set with the built-in entries kept in it (marked `origin: builtin`), and
    what its reference runs (`runs`: each run's observations) said of them."""
    builtins = builtin_set()
    confirmation = confirm(builtins, runs)
    own = tuple(i for i in learned.invariants if i.origin != "builtin")
    return dataclasses.replace(learned, invariants=own + tuple(kept(builtins, confirmation))), confirmation


def notes(invariants: InvariantSet) -> List[str]:
    """The report line that says a check ran against the built-in set alone (none else)."""
    return [NOTE] if invariants.invariants and all(i.origin == "builtin" for i in invariants.invariants) else []


def annotate(report: "CheckReport", invariants: InvariantSet, rules: Sequence["Allow"]) -> "CheckReport":
    """A check's report as people read it: it says when it was checked against the
    built-in set alone, and names what the declared exceptions (`--allow`) allowed."""
    from invariants import allow
    from invariants.explain import SILENCE
    told = notes(invariants)
    report.notes = told + report.notes
    report = allow.apply(report, rules)
    for c in report.causes if told else ():  # a built-in's way out is a declaration, not a re-infer
        block = f"@{c.locus}" if c.locus and "," not in c.locus else "[@BLOCK]"
        c.hint = c.hint.replace(SILENCE, f"if this is deliberate, declare it: --allow {c.family}{block}")
    return report
