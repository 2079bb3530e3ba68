"""The static phase of infer and check: solver answers recorded as `static.*` variables.

Runs once, at the root model's first call (before its first optimizer step), with the
tracer quiet; the answers become ordinary observations at step 0, so `infer` mines them
and `check` reports their violations at step 0 like any other invariant.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

import solver
from tracer.session import TraceSession


class StaticPhase:
    """An `on_first_forward` callback; `attach(session)` before the run starts."""

    def __init__(self) -> None:
        self.session: Optional[TraceSession] = None
        self.report: Optional[solver.ShapeReport] = None

    def attach(self, session: TraceSession) -> None:
        self.session = session

    def __call__(self, model: torch.nn.Module, args: tuple) -> None:
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if x is None or self.session is None or x.dim() == 0:
            return
        report = solver.analyse(model, args)
        self.report = report
        shape, rec = tuple(int(d) for d in x.shape), self.session.record
        if not isinstance(report.batch_polymorphic, solver.Unknown):
            rec("train", "static.output_polymorphic", isinstance(report.batch_polymorphic, solver.Proved))
        flops, act = report.cost_at(shape)
        if flops:
            rec("train", "static.flops_per_sample", flops / shape[0])
        if act:
            rec("train", "static.activation_bytes_per_sample", act / shape[0])
        pre = solver.prepool_stage(report, shape)
        if pre is not None:
            rec("train", "static.prepool_map", "x".join(str(d) for d in pre[1]))


def hooks(static: StaticPhase, others: Optional[Callable[[TraceSession], None]] = None
          ) -> Callable[[TraceSession], None]:
    """An `on_session` callback attaching the static phase (and calling `others`)."""
    def on_session(session: TraceSession) -> None:
        static.attach(session)
        if others is not None:
            others(session)
    return on_session


def describe(report: Optional[solver.ShapeReport]) -> List[str]:
    """One-line summaries for the text report."""
    if report is None:
        return []
    out = [f"static: output [{', '.join(report.output_shape)}] — {report.batch_polymorphic}"]
    if report.side_min is not None:
        kind = "square input side" if report.domain_kind == "square side" else report.domain_kind
        out.append(f"static: accepted {kind} {report.side_min}..{report.side_max or 'unbounded'}")
    out.append(f"static: analysed in {report.seconds:.2f} s" + (f" ({'; '.join(report.notes)})" if report.notes else ""))
    return out
