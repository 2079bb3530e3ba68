"""The static phase of infer and check: solver answers recorded as `static.*` variables.

A session extension: runs once, at the root model's first call (before its first
optimizer step), with the tracer quiet; the answers become ordinary observations at step
0, so `infer` mines them and `check` reports their violations at step 0 like any other
invariant.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

import torch

import solver
from tracer.calls import primary_input
from tracer.extension import Extension, SessionView


class StaticPhase(Extension):
    """The static phase as a session extension; `report` holds the solver's answers after
    the run (None when the model was never called or had no tensor input)."""

    name = "static"

    def __init__(self) -> None:
        self.report: Optional[solver.ShapeReport] = None

    def model(self, root: torch.nn.Module) -> torch.nn.Module:
        """The model the solver analyses (the root model itself here)."""
        return root

    def on_first_call(self, session: SessionView, root: torch.nn.Module, args: tuple,
                      kwargs: Mapping[str, Any]) -> None:
        x = primary_input(args, kwargs)
        if x is None or x.dim() == 0:
            return
        report = solver.analyse(self.model(root), args, kwargs)
        self.report = report
        shape, rec = tuple(int(d) for d in x.shape), session.record
        if not isinstance(report.batch_polymorphic, solver.Unknown):
            rec("train", "static.output_polymorphic", isinstance(report.batch_polymorphic, solver.Proved))
        flops, act = report.cost_at(shape)
        batch = shape[report.batch_index]  # a sequence-first input's batch is dim 1
        if flops:
            rec("train", "static.flops_per_sample", flops / batch)
        if act:
            rec("train", "static.activation_bytes_per_sample", act / batch)
        pre = solver.prepool_stage(report, shape)
        if pre is not None:
            rec("train", "static.prepool_map", "x".join(str(d) for d in pre[1]))


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
