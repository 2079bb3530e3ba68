"""The two workflows: trace reference runs and mine them (infer), trace a candidate and
check it as it runs (check); and loading the invariants a check is against.

torch, the tracer's session and the solver are imported by the functions that run a script,
so that the file-only commands (`export`, `diff`, `sets`) load in a fraction of a second
(tracer.extension, the protocol FailFast implements, imports no torch).
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from invariants import __version__, builtin, invfile, policy
from invariants.app.store import DB_NAME, Store
from invariants.errors import InvarError
from invariants.model import InvariantSet, at_least
from tracer.extension import Extension, SessionView

if TYPE_CHECKING:
    from invariants.builtin import Confirmation
    from invariants.check import Violation
    from invariants.mine import MineResult
    from invariants.report import CheckReport
    from tracer.runner import RunResult
    from tracer.session import TraceConfig


class Sampling(NamedTuple):
    """Which optimizer steps a traced run observes: every step before `dense`, then every
    `every`-th."""

    dense: int
    every: int


# Recording (trace, infer) observes densely; checking needs every step only at the start
# (structural bugs by step 1) and samples afterwards, which keeps its overhead low.
RECORD_SAMPLING = Sampling(50, 10)
CHECK_SAMPLING = Sampling(*policy.CHECK_SAMPLING)
SEED_STRIDE = 101  # seed offset between reference runs: run i adds i * SEED_STRIDE
FRESH_SEED_OFFSET = 7 * SEED_STRIDE  # a seed no reference run of the default 3 (or 7) used
DEFAULT_STEPS = 30  # optimizer steps of a reference run, and of a check of an old file
PER_RUN_SUPPORT = policy.PER_RUN_SUPPORT
Progress = Callable[[str], None]


class PipelineCrashed(InvarError):
    """The user's pipeline crashed (a reference run raised, or the script died before its
    model's first call); `result` is the traced run, when there is one."""

    def __init__(self, message: str, result: Optional["RunResult"] = None):
        super().__init__(message)
        self.result = result


def reference_steps(invariants: InvariantSet) -> int:
    """The optimizer steps the reference runs of an invariant set traced (a check's default)."""
    return int(invariants.meta.get("steps") or DEFAULT_STEPS)


@dataclass(frozen=True)
class ReferenceRun:
    """What one mined reference run contained: enough to tell an empty reference."""

    run_id: str
    script: str
    steps: int
    observations: int
    model_called: bool


@dataclass
class InferOutcome:
    invariants: InvariantSet
    mined: "MineResult"
    runs: List["RunResult"]
    references: List[ReferenceRun] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # for stderr: mixed scripts, thin support
    builtins: Optional["Confirmation"] = None  # what the reference runs said of the built-in set


def support_warning(runs: int, fix: str = f"use --runs {PER_RUN_SUPPORT} or more") -> Optional[str]:
    """The warning for fewer reference runs than once-per-run facts need, else None."""
    if runs >= PER_RUN_SUPPORT:
        return None
    return (f"{runs} reference run{'s' if runs != 1 else ''}: per-run facts (dataset statistics, "
            f"static shapes) need {PER_RUN_SUPPORT} runs of support and will be missing ({fix})")


def _mixed_scripts_warning(refs: Sequence[ReferenceRun]) -> Optional[str]:
    from invariants.report import short_path
    counts = Counter(r.script for r in refs)
    if len(counts) < 2:
        return None
    listed = ", ".join(f"{short_path(s)} ({n} run{'s' if n != 1 else ''})" for s, n in counts.items())
    return (f"the runs come from {len(counts)} different scripts: {listed}; mining them together mixes "
            f"pipelines, and meta.script names only the first")


def nothing_learned(outcome: InferOutcome) -> Optional[str]:
    """Why the reference runs held nothing to learn (no optimizer step, model never called),
    or None when there is an invariant to write or there genuinely were observations."""
    if outcome.invariants.invariants or not outcome.references:
        return None
    refs = outcome.references
    steps = sum(r.steps for r in refs)
    if steps and any(r.observations for r in refs):
        return None
    runs = f"{len(refs)} run{'s' if len(refs) != 1 else ''}, {steps} steps"
    if steps:
        what = "the reference recorded no observation"
    elif any(r.model_called for r in refs):
        what = "the reference ran no optimizer step"
    else:
        what = "the reference ran no optimizer step and never called its model"
    return f"{what} ({runs}); does the script train with these arguments?"


def _quiet(_: str) -> None:
    pass


def infer(script: str, args: Sequence[str], *, runs: int = 3, steps: int = 30, store_dir: str = ".invar",
          config: Optional["TraceConfig"] = None, progress: Progress = _quiet) -> InferOutcome:
    """Traces `runs` reseeded reference runs of the script and mines them."""
    from invariants.app.record import trace_to_store
    from invariants.app.scripts import check_script
    from invariants.app.static import StaticPhase
    from invariants.mine import mine
    from tracer.session import TraceConfig
    check_script(script)  # a missing script fails before any progress line
    cfg = config or TraceConfig(steps=steps)
    results, rows_per_run, refs = [], [], []
    with Store(store_dir) as store:
        for i in range(runs):
            collected: List[Any] = []
            progress(f"reference run {i + 1}/{runs}: tracing {steps or 'all'} steps of {script} ...")
            res = trace_to_store(store, script, args, cfg, label=f"infer {i + 1}/{runs}",
                                 seed_offset=i * SEED_STRIDE, listeners=[collected.extend],
                                 extensions=[StaticPhase()])
            progress(f"reference run {i + 1}/{runs}: {res.status}, {res.steps} steps, "
                     f"{res.observations} observations, {res.seconds:.1f} s (run {res.run_id})")
            if res.crashed:
                raise PipelineCrashed(f"{res.script} crashed: {res.error}", res)
            results.append(res)
            rows_per_run.append(collected)
            refs.append(_reference(store, res.run_id, res.script, res.steps, res.observations))
    meta = _meta(script, args, steps, [r.run_id for r in results], cfg.naming_options())
    invariants, mined = mine(rows_per_run, meta)
    invariants, confirmation = builtin.with_builtins(invariants, rows_per_run)  # kept, marked origin: builtin
    return InferOutcome(invariants, mined, results, refs, builtins=confirmation)


def infer_from_store(run_ids: Sequence[str], store_dir: str = ".invar",
                     support_fix: str = f"mine {PER_RUN_SUPPORT} or more runs") -> InferOutcome:
    """Mines invariants from runs already in the store; `warnings` says when they come
    from different scripts or are too few for once-per-run facts (`support_fix`: what to do)."""
    from invariants.mine import mine
    with Store(store_dir, create=False) as store:
        infos = [store.run(r) for r in run_ids]
        rows = [list(store.observations(i.id)) for i in infos]
        refs = [_reference(store, i.id, i.script, i.steps, len(r)) for i, r in zip(infos, rows)]
        tracing = store.facts(infos[0].id).get("tracing") if infos else None
    steps = max((i.steps for i in infos), default=0)
    meta = _meta(infos[0].script, infos[0].argv, steps, [i.id for i in infos], tracing)
    invariants, mined = mine(rows, meta)
    invariants, confirmation = builtin.with_builtins(invariants, rows)  # kept, marked origin: builtin
    thin = support_warning(len(infos), support_fix)
    warnings = [w for w in (_mixed_scripts_warning(refs), thin) if w]
    return InferOutcome(invariants, mined, [], refs, warnings, builtins=confirmation)


def _reference(store: Store, run_id: Optional[str], script: str, steps: int, observations: int) -> ReferenceRun:
    called = store.facts(run_id).get("root_model") is not None if run_id else False
    return ReferenceRun(run_id or "", script, steps, observations, called)


def _meta(script: str, args: Sequence[str], steps: int, run_ids: Sequence[Optional[str]],
          tracing: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The invariant file's meta; `tracing`: the options that shaped the variable names
    (`--block-depth`: check traces with them, tracer/config.py NAMING_OPTIONS)."""
    import torch
    meta = {"script": str(script), "args": list(args), "runs": len(run_ids), "steps": steps,
            "run_ids": [r for r in run_ids if r], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "torch": str(torch.__version__), "invar": __version__}
    if tracing:
        meta["tracing"] = dict(tracing)
    return meta


class FailFast(Extension):
    """`check --fail-fast`: the first violation at `fail_on` or worse ends the run at the
    next optimizer step (the checker calls `on_violation` while the step's rows flush)."""

    name = "fail_fast"

    def __init__(self, fail_on: str):
        self.fail_on = fail_on
        self._session: Optional[SessionView] = None

    def attach(self, session: SessionView) -> None:
        self._session = session

    def on_violation(self, v: "Violation") -> None:
        if at_least(v.severity, self.fail_on) and self._session is not None:
            self._session.request_stop(f"--fail-fast: {v.id} violated at step {v.step}")


def check(script: str, args: Sequence[str], invariants: InvariantSet, *, against: str = "",
          steps: Optional[int] = None, fail_fast: bool = False, fail_on: str = "error",
          store_dir: str = ".invar", config: Optional["TraceConfig"] = None,
          seed_offset: int = 0) -> "CheckReport":
    """Runs the script under the tracer and evaluates the invariants as observations arrive."""
    from invariants.app.record import trace_to_store
    from invariants.app.static import StaticPhase
    from invariants.app.static import describe as describe_static
    from invariants.check import Checker
    from invariants.explain import explain
    from invariants.report import CheckReport
    from tracer.session import TraceConfig
    budget = steps if steps is not None else reference_steps(invariants)
    cfg = config or TraceConfig(steps=budget, dense_steps=CHECK_SAMPLING.dense, sample_every=CHECK_SAMPLING.every)
    stopper = FailFast(fail_on) if fail_fast else None
    checker = Checker(invariants, on_violation=stopper.on_violation if stopper else None)
    static = StaticPhase()
    with Store(store_dir) as store:
        res = trace_to_store(store, script, args, cfg, label="check", listeners=[checker.feed],
                             extensions=[static] + ([stopper] if stopper else []), seed_offset=seed_offset)
        seen = store.variable_steps(res.run_id) if res.run_id else {}
    checker.finish()
    violations = sorted(checker.violations.values(), key=lambda v: (v.step, v.id))
    causes = explain(violations)
    notes = describe_static(static.report)
    if res.stop_reason:
        notes.append(f"stopped early: {res.stop_reason}")
    if res.faults:
        notes.append("tracer observers faulted (the run was not affected): " + "; ".join(res.faults))
    report = CheckReport(script=str(script), against=against, run_id=res.run_id, run_status=res.status,
                         steps=res.steps, invariants_total=len(invariants.invariants),
                         invariants_checked=len(checker.checked), invariants_disabled=checker.skipped,
                         violations=violations, causes=causes, seconds=res.seconds, fail_on=fail_on,
                         crash=res.error if res.crashed else None, notes=notes, margins=dict(checker.margins),
                         static=static.report.to_json() if static.report is not None else None)
    return with_coverage(report, invariants, checker.checked, seen)


def with_coverage(report: "CheckReport", invariants: InvariantSet, checked: Any,
                  seen: Dict[Any, Any]) -> "CheckReport":
    """The report with what was not checked and why (`unchecked`), the reference script
    and how much the run observed, from the checked ids and the run's (phase, variable)
    -> (first, last step) map."""
    from invariants.coverage import unchecked
    report.unchecked = unchecked(invariants, checked, seen)
    report.reference = invariants.meta.get("script")
    report.observed = len(seen)
    report.active_errors = sum(1 for i in invariants.active() if i.severity == "error")
    return report


def coverage_from_store(report: "CheckReport", invariants: InvariantSet, store_dir: str) -> "CheckReport":
    """`with_coverage` for a report merged from stored runs (one per rank, ids in
    `report.run_id` separated by commas): re-evaluates each run to learn what was checked."""
    from invariants.check import Checker
    checked: set = set()
    seen: Dict[Any, Any] = {}
    with Store(store_dir, create=False) as store:
        for run_id in filter(None, (report.run_id or "").split(",")):
            checker = Checker(invariants)
            checker.feed(list(store.observations(run_id)))
            checker.finish()
            checked |= checker.checked
            for iid, m in checker.margins.items():
                report.margins[iid] = min(m, report.margins.get(iid, m))
            for key, (lo, hi) in store.variable_steps(run_id).items():
                old = seen.get(key, (lo, hi))
                seen[key] = (min(lo, old[0]), max(hi, old[1]))
    return with_coverage(report, invariants, checked, seen)


def load_invariants(source: str, store_dir: str = ".invar") -> InvariantSet:
    """An invariant file, `builtin` (the built-in set), or the id (or a unique id prefix) of
    an invariant set saved in the store; InvariantFileError when it is none of them. Never
    creates a store."""
    if builtin.is_builtin_source(source) and not os.path.exists(source):
        return builtin.builtin_set()
    if os.path.exists(source):
        return invfile.load(source)
    has_store = os.path.isfile(os.path.join(store_dir, DB_NAME))
    if has_store:
        with Store(store_dir, create=False) as store:
            found = store.find_invariant_set(source)
        if found is not None:
            return invfile.loads(found.body, "json", source=f"invariant set {found.id}")
    where = (f"see `invar sets --store {store_dir}`" if has_store
             else f"and no store at {store_dir} to hold a set")
    raise invfile.InvariantFileError(f"no such file or invariant set ({where})", path=source)
