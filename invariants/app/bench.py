"""Benchmarks printed as ratios measured side by side in one process (never timed asserts).

Per-step overhead: the same script runs untraced, traced as `infer` records it (tracer +
store) and traced as `check` evaluates it (tracer + store + checker), interleaved over
several repeats; each run's per-step wall times come from one optimizer post-step hook
(registered for the plain run too), and the medians are compared.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch.optim.optimizer as optimizer_module

from invariants.app.record import BufferedWriter
from invariants.app.scripts import check_script
from invariants.app.store import Store
from invariants.app.workflow import CHECK_SAMPLING
from invariants.check import Checker
from invariants.mine import mine
from invariants.model import InvariantSet
from tracer.runner import _execute, reseeded, script_environment
from tracer.session import StepBudgetReached, TraceConfig, TraceSession

WARMUP = 3  # first steps excluded: allocator and first-call effects


@dataclass
class StepTiming:
    """Per-step times of each mode, kept per repeat: a ratio compares runs that ran next to
    each other (a shared machine's speed drifts more between repeats than within one)."""

    script: str
    repeats: List[Dict[str, List[float]]]  # per repeat: mode -> seconds per step

    def median_step(self, mode: str) -> float:
        return statistics.median(t for rep in self.repeats for t in rep[mode])

    def ratio(self, mode: str) -> float:
        """Median over repeats of (median step of `mode` / median step untraced)."""
        return statistics.median(statistics.median(r[mode]) / statistics.median(r["plain"]) for r in self.repeats)

    def mean_ratio(self, mode: str) -> float:
        """The same with mean steps: the observed steps' cost spread over all steps."""
        return statistics.median(statistics.fmean(r[mode]) / statistics.fmean(r["plain"]) for r in self.repeats)


@contextlib.contextmanager
def _step_clock(times: List[float], steps: int) -> Any:
    def post(opt: Any, args: Any, kwargs: Any) -> None:
        times.append(time.perf_counter())
        if len(times) >= steps:
            raise StepBudgetReached(len(times))
    handle = optimizer_module.register_optimizer_step_post_hook(post)
    try:
        yield
    finally:
        handle.remove()


def _run(script: str, args: Sequence[str], steps: int, session: Optional[TraceSession]) -> List[float]:
    path = check_script(script)
    times: List[float] = []
    # The clock's post-step hook is registered after the session's, so a step's interval
    # holds all of that step's tracer work (its flush and the checker's evaluation included).
    with script_environment(path, args), reseeded(0), contextlib.redirect_stdout(io.StringIO()), \
            (session if session is not None else contextlib.nullcontext()), _step_clock(times, steps):
        _execute(path)
    return [b - a for a, b in zip(times[WARMUP:], times[WARMUP + 1:])]


def step_overhead(script: str, args: Sequence[str] = (), steps: int = 40, repeats: int = 3,
                  invariants: Optional[InvariantSet] = None, progress: Callable[[str], None] = lambda s: None
                  ) -> StepTiming:
    """Per-step times of plain / infer-mode / check-mode runs, interleaved (the order of the
    modes rotates from one repeat to the next)."""
    modes = ["plain", "infer", "check"]
    repeats_out: List[Dict[str, List[float]]] = []
    with tempfile.TemporaryDirectory() as tmp, Store(tmp) as store:
        if invariants is None:
            rows: List[Any] = []
            _run(script, args, steps, TraceSession(TraceConfig(), rows.extend))
            invariants, _ = mine([rows])
        for rep in range(repeats):
            times: Dict[str, List[float]] = {}
            for mode in modes[rep % 3:] + modes[:rep % 3]:
                progress(f"{script}: repeat {rep + 1}/{repeats}, {mode}")
                session = None
                if mode != "plain":
                    run_id = store.new_run(script, list(args), label=f"bench {mode}")
                    writer = BufferedWriter(store, run_id)
                    sinks: List[Callable[[Any], Any]] = [writer]
                    cfg = TraceConfig()
                    if mode == "check":
                        sinks.append(Checker(invariants).feed)
                        cfg = TraceConfig(dense_steps=CHECK_SAMPLING.dense, sample_every=CHECK_SAMPLING.every)
                    session = TraceSession(cfg, lambda r, sinks=sinks: [s(r) for s in sinks])
                times[mode] = _run(script, args, steps, session)
                if session is not None:
                    writer.close()
            if all(times.values()):
                repeats_out.append(times)
    if not repeats_out:
        raise ValueError(f"{script}: fewer than {WARMUP + 2} optimizer steps, nothing to time")
    return StepTiming(script, repeats_out)


def mining_time(runs: int = 5, steps: int = 200, variables: int = 400) -> Dict[str, float]:
    """Seconds to mine `runs` synthetic traces of `steps` steps and `variables` variables,
    shaped like real traces (block, input and loss variables)."""
    import random
    rng = random.Random(0)
    names = ([f"block.b{i}.{v}" for i in range(variables // 8) for v in
              ("params", "trainable_fraction", "in_optimizer_fraction", "no_grad_fraction",
               "grad_norm", "update_ratio")]
             + [f"act.a{i}.dead_fraction" for i in range(variables // 8)]
             + ["input.mean", "input.std", "loss.value", "output.width", "label.max", "optim.lr_max"])
    traces = []
    for r in range(runs):
        rows = []
        for step in range(steps):
            for n in names:
                if n.endswith(("params", "width")):
                    v = 1000.0
                elif n.endswith(("fraction",)):
                    v = 1.0 if "optimizer" in n or "trainable" in n else 0.0
                elif n == "loss.value":
                    v = 2.0 * (0.99 ** step) + rng.random() * 0.01
                elif n == "label.max":
                    v = float(rng.choice([8, 9]))
                else:
                    v = 0.5 + rng.random() * 0.1
                rows.append((step, "train", n, v, None))
        traces.append(rows)
    start = time.perf_counter()
    invariants, result = mine(traces)
    return {"seconds": time.perf_counter() - start, "observations": float(sum(len(t) for t in traces)),
            "invariants": float(len(invariants.invariants))}
