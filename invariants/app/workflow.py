"""The two workflows: trace reference runs and mine them (infer), trace a candidate and
check it (check); and loading the invariants a check is against.

Each traced run is a child process under the supervisor (supervisor.py), which records
into the store; these workflows read the store back: infer mines the stored runs, check
evaluates the stored observations step by step as the run flushed them (with --fail-fast
the child also checks online, to stop itself). Nothing here loads torch: the child does.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

from invariants import __version__, builtin, invfile, policy
from invariants.app.store import CLEAN_ENDINGS, DB_NAME, Store
from invariants.errors import InvarError, UsageError
from invariants.model import InvariantSet

if TYPE_CHECKING:
    from invariants.builtin import Confirmation
    from invariants.mine import MineResult
    from invariants.report import CheckReport
    from tracer.ending import RunResult
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


Settings = Union[Mapping[str, Any], "TraceConfig", None]  # TraceConfig's fields, or one


class PipelineCrashed(InvarError):
    """The user's pipeline crashed (a reference run raised, or the script died before its
    model's first call); `result` is the traced run, when there is one."""

    def __init__(self, message: str, result: Optional["RunResult"] = None):
        super().__init__(message)
        self.result = result


class RunInterrupted(InvarError):
    """A reference run was interrupted (SIGINT, SIGTERM): nothing is mined from a part."""


def trace_settings(config: Settings, **defaults: Any) -> Dict[str, Any]:
    """The TraceConfig fields a traced child gets: `config` (a mapping or a TraceConfig),
    else `defaults`."""
    if config is None:
        return dict(defaults)
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)  # type: ignore[arg-type]
    return dict(config)


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
    or None when they trained and were observed. A reference without an optimizer step is
    nothing to learn even when its step 0 (the model's first call) gave some invariants."""
    if not outcome.references:
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
          config: Settings = None, progress: Progress = _quiet, timeout: Optional[float] = None) -> InferOutcome:
    """Traces `runs` reseeded reference runs of the script, each in a fresh process, and
    mines them; PipelineCrashed or RunInterrupted when one did not run to its end."""
    from invariants.app.scripts import check_script
    from invariants.app.supervisor import traced_run
    check_script(script)  # a missing script fails before any progress line
    settings = trace_settings(config, steps=steps)
    results = []
    for i in range(runs):
        progress(f"reference run {i + 1}/{runs}: tracing {steps or 'all'} steps of {script} ...")
        res = traced_run(store_dir, script, args, settings, label=f"infer {i + 1}/{runs}",
                         seed_offset=i * SEED_STRIDE, static=True, timeout=timeout)
        progress(f"reference run {i + 1}/{runs}: {res.status}, {res.steps} steps, "
                 f"{res.observations} observations, {res.seconds:.1f} s (run {res.run_id})")
        if res.interrupted:
            raise RunInterrupted(f"reference run {i + 1}/{runs} was {res.error or 'interrupted'}; nothing was "
                                 f"written (its partial trace is kept as run {res.run_id})")
        if res.crashed:
            raise PipelineCrashed(f"{res.script} crashed: {res.error}", res)
        results.append(res)
    with Store(store_dir, create=False) as store:
        outcome = _mine_stored(store, [r.run_id or "" for r in results], steps)
    outcome.runs = results
    return outcome


def infer_from_store(run_ids: Sequence[str], store_dir: str = ".invar",
                     support_fix: str = f"mine {PER_RUN_SUPPORT} or more runs",
                     allow_incomplete: bool = False) -> InferOutcome:
    """Mines invariants from runs already in the store; `warnings` says when they come
    from different scripts or are too few for once-per-run facts (`support_fix`: what to do).
    A run that did not end cleanly (running, crashed, exited, interrupted, killed) is refused
    unless `allow_incomplete`, and then named in `warnings`."""
    with Store(store_dir, create=False) as store:
        infos = [store.run(r) for r in run_ids]
        incomplete = [i for i in infos if i.status not in CLEAN_ENDINGS]
        if incomplete and not allow_incomplete:
            raise UsageError(f"{_runs_named(incomplete)} did not run to its end, so it holds part of a pipeline: "
                             f"mine complete runs, or pass --allow-incomplete to mine it anyway")
        outcome = _mine_stored(store, [i.id for i in infos], max((i.steps for i in infos), default=0))
    thin = support_warning(len(infos), support_fix)
    partial = f"mining {_runs_named(incomplete)}, which did not run to its end" if incomplete else None
    outcome.warnings = [w for w in (_mixed_scripts_warning(outcome.references), thin, partial) if w]
    return outcome


def _runs_named(infos: Sequence[Any]) -> str:
    return ", ".join(f"run {i.id} ({i.status}{f': {i.error}' if i.error else ''})" for i in infos)


def _mine_stored(store: Store, run_ids: Sequence[str], steps: int) -> InferOutcome:
    """Mines the stored runs (in this order) into an InferOutcome."""
    from invariants.mine import mine
    infos = [store.run(r) for r in run_ids]
    rows = [list(store.observations(i.id)) for i in infos]
    refs = [_reference(store, i.id, i.script, i.steps, len(r)) for i, r in zip(infos, rows)]
    first = store.facts(infos[0].id) if infos else {}
    meta = _meta(infos[0].script if infos else "", infos[0].argv if infos else [], steps,
                 [i.id for i in infos], first.get("torch"), first.get("tracing"))
    invariants, mined = mine(rows, meta)
    invariants, confirmation = builtin.with_builtins(invariants, rows)  # kept, marked origin: builtin
    return InferOutcome(invariants, mined, [], refs, builtins=confirmation)


def _reference(store: Store, run_id: Optional[str], script: str, steps: int, observations: int) -> ReferenceRun:
    called = store.facts(run_id).get("root_model") is not None if run_id else False
    return ReferenceRun(run_id or "", script, steps, observations, called)


def _meta(script: str, args: Sequence[str], steps: int, run_ids: Sequence[Optional[str]],
          torch_version: Optional[str], tracing: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The invariant file's meta; `tracing`: the options that shaped the variable names
    (`--block-depth`: check traces with them, tracer/config.py NAMING_OPTIONS)."""
    if torch_version is None:  # a run recorded before its torch version was: this process's
        import torch
        torch_version = str(torch.__version__)
    meta = {"script": str(script), "args": list(args), "runs": len(run_ids), "steps": steps,
            "run_ids": [r for r in run_ids if r], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "torch": torch_version, "invar": __version__}
    if tracing:
        meta["tracing"] = dict(tracing)
    return meta


def check(script: str, args: Sequence[str], invariants: InvariantSet, *, against: str = "",
          steps: Optional[int] = None, fail_fast: bool = False, fail_on: str = "error",
          store_dir: str = ".invar", config: Settings = None, seed_offset: int = 0,
          timeout: Optional[float] = None) -> "CheckReport":
    """Runs the script traced in a fresh process and checks the invariants against what it
    recorded, however it ended (a crash, `os._exit`, an interrupt): what it did before is
    reported. With `fail_fast` the child checks online and stops at the first violation."""
    from invariants.app.supervisor import traced_run
    budget = steps if steps is not None else reference_steps(invariants)
    settings = trace_settings(config, steps=budget, dense_steps=CHECK_SAMPLING.dense,
                              sample_every=CHECK_SAMPLING.every)
    res = traced_run(store_dir, script, args, settings, label="check", seed_offset=seed_offset, static=True,
                     fail_on=fail_on if fail_fast else None, invariants=invariants if fail_fast else None,
                     timeout=timeout)
    return checked_run(res, invariants, script=str(script), against=against, fail_on=fail_on, store_dir=store_dir)


def checked_run(res: "RunResult", invariants: InvariantSet, *, script: str, against: str, fail_on: str,
                store_dir: str) -> "CheckReport":
    """The report of a recorded run checked against the invariants: its observations fed
    to the checker step by step, in the order the run flushed them."""
    from invariants.app.runspec import STATIC_NOTES, STATIC_REPORT
    from invariants.check import Checker
    from invariants.explain import explain
    from invariants.report import CheckReport
    checker = Checker(invariants)
    with Store(store_dir, create=False) as store:
        for _, rows in itertools.groupby(store.observations(res.run_id or ""), key=lambda r: r.step):
            checker.feed(list(rows))
        seen = store.variable_steps(res.run_id or "")
    checker.finish()
    violations = sorted(checker.violations.values(), key=lambda v: (v.step, v.id))
    notes = list(res.facts.get(STATIC_NOTES) or [])
    if res.stop_reason:
        notes.append(f"stopped early: {res.stop_reason}")
    if res.interrupted:
        notes.append(f"{res.error or 'interrupted'} after {res.steps} step(s): what it did until then was checked")
    if res.faults:
        notes.append("tracer observers faulted (the run was not affected): " + "; ".join(res.faults))
    report = CheckReport(script=script, against=against, run_id=res.run_id, run_status=res.status,
                         steps=res.steps, invariants_total=len(invariants.invariants),
                         invariants_checked=len(checker.checked), invariants_disabled=checker.skipped,
                         violations=violations, causes=explain(violations), seconds=res.seconds, fail_on=fail_on,
                         crash=res.error if res.crashed else None, notes=notes, margins=dict(checker.margins),
                         static=res.facts.get(STATIC_REPORT))
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
    creates a store. An empty source is a UsageError: an unset shell variable must not pick
    whatever set the store holds."""
    if not source.strip():
        raise UsageError("the invariant file or set id is empty (an unset shell variable?): give a file, "
                         "`builtin`, or an id from `invar sets`")
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
