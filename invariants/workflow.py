"""The CLI's wiring: trace reference runs and mine them (infer), trace a candidate and check
it (check). The only module besides cli.py that joins tracer, solver and invariants.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from invariants import __version__, invfile
from invariants.check import Checker, Violation
from invariants.explain import explain
from invariants.mine import MineResult, mine
from invariants.model import InvariantSet
from invariants.report import CheckReport
from invariants.static import StaticPhase
from invariants.static import describe as describe_static
from invariants.static import hooks as static_hooks
from tracer.runner import RunResult, trace_to_store
from tracer.session import TraceConfig, TraceSession
from tracer.store import Store

SEED_STRIDE = 101  # seed offset between reference runs
# check observes every step only at the start (structural bugs by step 1), then samples.
CHECK_DENSE_STEPS, CHECK_SAMPLE_EVERY = 5, 5
Progress = Callable[[str], None]


class PipelineCrashed(Exception):
    """A reference run of the pipeline raised; the trace is kept in the store."""

    def __init__(self, result: RunResult):
        super().__init__(f"{result.script} crashed: {result.error}")
        self.result = result


@dataclass
class InferOutcome:
    invariants: InvariantSet
    mined: MineResult
    runs: List[RunResult]


def _quiet(_: str) -> None:
    pass


def infer(script: str, args: Sequence[str], *, runs: int = 3, steps: int = 30, store_dir: str = ".invar",
          config: Optional[TraceConfig] = None, progress: Progress = _quiet) -> InferOutcome:
    """Traces `runs` reseeded reference runs of the script and mines them."""
    cfg = config or TraceConfig(steps=steps)
    results, rows_per_run = [], []
    with Store(store_dir) as store:
        for i in range(runs):
            collected: List[Any] = []
            progress(f"reference run {i + 1}/{runs}: tracing {steps or 'all'} steps of {script} ...")
            static = StaticPhase()
            res = trace_to_store(store, script, args, cfg, label=f"infer {i + 1}/{runs}",
                                 seed_offset=i * SEED_STRIDE, listeners=[collected.extend],
                                 on_first_forward=static, on_session=static_hooks(static))
            progress(f"reference run {i + 1}/{runs}: {res.status}, {res.steps} steps, "
                     f"{res.observations} observations, {res.seconds:.1f} s (run {res.run_id})")
            if res.crashed:
                raise PipelineCrashed(res)
            results.append(res)
            rows_per_run.append(collected)
    meta = _meta(script, args, steps, [r.run_id for r in results])
    invariants, mined = mine(rows_per_run, meta)
    return InferOutcome(invariants, mined, results)


def infer_from_store(run_ids: Sequence[str], store_dir: str = ".invar") -> InferOutcome:
    """Mines invariants from runs already in the store."""
    with Store(store_dir) as store:
        infos = [store.run(r) for r in run_ids]
        rows = [list(store.observations(i.id)) for i in infos]
    steps = max((i.steps for i in infos), default=0)
    meta = _meta(infos[0].script, infos[0].argv, steps, [i.id for i in infos])
    invariants, mined = mine(rows, meta)
    return InferOutcome(invariants, mined, [])


def _meta(script: str, args: Sequence[str], steps: int, run_ids: Sequence[Optional[str]]) -> Dict[str, Any]:
    return {"script": str(script), "args": list(args), "runs": len(run_ids), "steps": steps,
            "run_ids": [r for r in run_ids if r], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "torch": str(torch.__version__), "invar": __version__}


def check(script: str, args: Sequence[str], invariants: InvariantSet, *, against: str = "",
          steps: Optional[int] = None, fail_fast: bool = False, fail_on: str = "error",
          store_dir: str = ".invar", config: Optional[TraceConfig] = None,
          seed_offset: int = 0) -> CheckReport:
    """Runs the script under the tracer and evaluates the invariants as observations arrive."""
    budget = steps if steps is not None else int(invariants.meta.get("steps") or 30)
    cfg = config or TraceConfig(steps=budget, dense_steps=CHECK_DENSE_STEPS, sample_every=CHECK_SAMPLE_EVERY)
    sessions: List[TraceSession] = []
    rank = {"warning": 1, "error": 2}[fail_on]

    def on_violation(v: Violation) -> None:
        if fail_fast and {"warning": 1, "error": 2}.get(v.severity, 0) >= rank and sessions:
            sessions[0].request_stop(f"--fail-fast: {v.id} violated at step {v.step}")

    checker = Checker(invariants, on_violation=on_violation)
    static = StaticPhase()
    with Store(store_dir) as store:
        res = trace_to_store(store, script, args, cfg, label="check", listeners=[checker.feed],
                             on_first_forward=static, on_session=static_hooks(static, sessions.append),
                             seed_offset=seed_offset)
    checker.finish()
    violations = sorted(checker.violations.values(), key=lambda v: (v.step, v.id))
    causes = explain(violations)
    notes = describe_static(static.report)
    if res.stop_reason:
        notes.append(f"stopped early: {res.stop_reason}")
    if res.faults:
        notes.append("tracer observers faulted (the run was not affected): " + "; ".join(res.faults))
    return CheckReport(script=str(script), against=against, run_id=res.run_id, run_status=res.status,
                       steps=res.steps, invariants_total=len(invariants.invariants),
                       invariants_checked=len(checker.checked), invariants_disabled=checker.skipped,
                       violations=violations, causes=causes, seconds=res.seconds, fail_on=fail_on,
                       crash=res.error if res.crashed else None, notes=notes,
                       static=static.report.to_json() if static.report is not None else None)


def load_invariants(source: str, store_dir: str = ".invar") -> InvariantSet:
    """An invariant file, or the id of an invariant set saved in the store."""
    if os.path.exists(source) or not os.path.isdir(store_dir):
        return invfile.load(source)
    with Store(store_dir) as store:
        body = store.invariant_set(source)
    if body is None:
        return invfile.load(source)  # raises the file-not-found error
    return invfile.loads(body, "json")
