"""The observations a report plots: the checked run's and the reference runs', read once
from the store, with per-step reference envelopes (min–max over the reference runs).

A missing store or missing runs are not errors: the report then draws what it has (the
invariant's own bounds and support span) and `notes` says what was missing.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from invariants.app.store import DB_NAME, Store, StoreError
from invariants.observation import Observation

Key = Tuple[str, str]  # (phase, variable)
Points = List[Tuple[int, float]]  # (step, value), steps increasing


@dataclass(frozen=True)
class Envelope:
    """The reference runs' range of one variable per step: `low[i]..high[i]` at `steps[i]`."""

    steps: Tuple[int, ...]
    low: Tuple[float, ...]
    high: Tuple[float, ...]
    runs: int  # reference runs that observed the variable at all

    def span(self) -> Tuple[float, float]:
        """The smallest and largest reference value at any step."""
        return min(self.low), max(self.high)


@dataclass
class RunSeries:
    """One run's numeric observations, by (phase, variable), in recording order: `values`
    keeps every value of a step (an eval pass records several batches)."""

    run_id: str
    values: Dict[Key, Dict[int, List[float]]] = field(default_factory=dict)
    texts: Dict[Key, Dict[int, List[str]]] = field(default_factory=dict)

    @classmethod
    def of(cls, run_id: str, rows: Iterable[Observation]) -> "RunSeries":
        """The series of a run's observations (as `Store.observations` yields them)."""
        s = cls(run_id)
        for step, phase, variable, value, text in rows:
            if value is not None:
                s.values.setdefault((phase, variable), {}).setdefault(step, []).append(value)
            elif text is not None:
                s.texts.setdefault((phase, variable), {}).setdefault(step, []).append(text)
        return s

    def points(self, phase: str, variable: str) -> Points:
        """(step, mean of the step's values), steps increasing."""
        by_step = self.values.get((phase, variable), {})
        return [(step, statistics.fmean(vs)) for step, vs in sorted(by_step.items())]

    def raw(self, phase: str, variable: str) -> Points:
        """Every (step, value), several per step where the run recorded several."""
        by_step = self.values.get((phase, variable), {})
        return [(step, v) for step, vs in sorted(by_step.items()) for v in vs]

    def variables(self) -> List[str]:
        """Variable names with a numeric value, in the order first recorded."""
        return list(dict.fromkeys(v for _, v in self.values))


@dataclass
class Traces:
    """The checked run (None when there is none to read) and the reference runs found."""

    checked: Optional[RunSeries] = None
    references: List[RunSeries] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def checked_points(self, phase: str, variable: str) -> Points:
        return self.checked.points(phase, variable) if self.checked else []

    def envelope(self, phase: str, variable: str) -> Optional[Envelope]:
        """Per step, the lowest and highest value any reference run had (None: no run saw it)."""
        by_step: Dict[int, List[float]] = {}
        runs = 0
        for ref in self.references:
            seen = ref.values.get((phase, variable))
            if not seen:
                continue
            runs += 1
            for step, vs in seen.items():
                by_step.setdefault(step, []).extend(vs)
        if not by_step:
            return None
        steps = sorted(by_step)
        return Envelope(tuple(steps), tuple(min(by_step[s]) for s in steps),
                        tuple(max(by_step[s]) for s in steps), runs)

    def reference_values(self, phase: str, variable: str) -> List[float]:
        """Every value the reference runs recorded for the variable."""
        return [v for ref in self.references for vs in ref.values.get((phase, variable), {}).values() for v in vs]


def load_traces(store_dir: Optional[str], checked_run: Optional[str], reference_runs: Sequence[str]) -> Traces:
    """The runs a report plots, from the store at `store_dir`. `checked_run` may list several
    run ids separated by commas (the ranks of a distributed check): the first is plotted."""
    traces = Traces()
    if not store_dir or not os.path.isfile(os.path.join(store_dir, DB_NAME)):
        traces.notes.append(f"no store at {store_dir}: the plots show the invariants' bounds and the span "
                            f"the reference runs were fitted on, without per-step curves (pass --store)")
        return traces
    ranks = [r for r in (checked_run or "").split(",") if r]
    try:
        with Store(store_dir, create=False) as store:
            if ranks:
                traces.checked = _series(store, ranks[0], "the checked run", traces.notes)
                if len(ranks) > 1:
                    traces.notes.append(f"a distributed check of {len(ranks)} ranks: the curves show rank 0's run "
                                        f"{ranks[0]}")
            for run_id in reference_runs:
                ref = _series(store, run_id, "reference run", traces.notes)
                if ref is not None:
                    traces.references.append(ref)
    except StoreError as e:
        traces.notes.append(f"the store at {store_dir} could not be read ({e}): plots without curves")
    if reference_runs and not traces.references:
        traces.notes.append("none of the reference runs is in the store: the plots show the invariants' bounds "
                            "and fitted span instead of per-step reference envelopes")
    elif not reference_runs:
        traces.notes.append("the invariant set names no reference run: no per-step reference envelopes")
    return traces


def _series(store: Store, run_id: str, what: str, notes: List[str]) -> Optional[RunSeries]:
    try:
        info = store.run(run_id)
    except StoreError:
        notes.append(f"{what} {run_id} is not in the store")
        return None
    return RunSeries.of(info.id, store.observations(info.id))
