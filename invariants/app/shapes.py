"""`invar shapes`: run a script through its model's first call, analyse it, stop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

import solver
from tracer import data as datamod
from tracer.calls import primary_input
from tracer.extension import Extension, SessionView
from tracer.graph import GraphCapture, GraphRecord
from tracer.graph_facts import Cut, gradient_cuts
from tracer.runner import run_script
from tracer.session import StopRequested, TraceConfig


@dataclass
class ShapesOutcome:
    report: Optional[solver.ShapeReport]
    input_shape: Tuple[int, ...]
    label_classes: Optional[int]
    reason: str = ""
    crashed: bool = False
    graph: Optional[GraphRecord] = None  # the model's graph, when its first forward finished
    cuts: Optional[List[Cut]] = None      # its modules cut off from the output (None: no data flow)

    def to_json(self) -> Dict[str, Any]:
        d = self.report.to_json() if self.report else {}
        d["example_input"] = list(self.input_shape)
        d["label_classes"] = self.label_classes
        g = self.graph
        d["graph"] = None if g is None else {"kind": g.kind, "nodes": len(g.nodes), "reason": g.reason}
        d["gradient_flow"] = {"blocked": None if self.cuts is None else [
            {"block": c.block, "module": c.module, "by": c.by, "where": c.where or None, "why": c.why}
            for c in self.cuts]}
        if self.report is not None:
            flops, act = self.report.cost_at(self.input_shape)
            d["cost"]["at_example"] = {"flops": flops, "activation_bytes": act}
            pre = solver.prepool_stage(self.report, self.input_shape)
            d["prepool"] = None if pre is None else {"module": pre[0], "map": list(pre[1])}
        return d

    def text(self) -> str:
        r = self.report
        assert r is not None
        lines = [f"call    {r.call}",
                 f"input   [{', '.join(r.input_names)}]  (example {list(self.input_shape)})",
                 f"output  [{', '.join(r.output_shape)}]  {r.batch_polymorphic}"]
        if r.label_check is not None:
            lines.append(f"labels  {r.label_check}")
        lines.append(f"domain  {r.domain_text()}")
        for expr, module in r.guards[:12]:
            lines.append(f"  guard {expr}   ({module or 'model forward'})")
        for p in r.probes:
            verdict = {True: "accepted", False: "rejected", None: "undecided"}[p.accepted]
            blame = f" — blamed on {', '.join(p.blame)}" if p.blame else ""
            lines.append(f"probe   {'x'.join(map(str, p.size))}: {verdict}{blame}")
        lines.append("stages")
        for module, shape in r.stages:
            lines.append(f"  {module:<24} [{', '.join(shape)}]")
        flops, act = r.cost_at(self.input_shape)
        lines.append(f"cost    FLOPs {r.flops}")
        lines.append(f"        activation bytes {r.activation_bytes}")
        lines.append(f"        at the example input: {flops} FLOPs, {act} activation bytes")
        lines += self._graph_lines()
        for note in r.notes:
            lines.append(f"note    {note}")
        lines.append(f"analysed in {r.seconds:.2f} s")
        return "\n".join(lines)


    def _graph_lines(self) -> List[str]:
        if self.graph is None:
            return ["graph   not captured (the model's first forward did not finish)"]
        lines = [f"graph   {self.graph.summary()}"]
        if self.cuts is None:
            lines.append("        gradient flow unknown: the module-call graph has no data flow")
        elif not self.cuts:
            lines.append("        every parametrised module has a differentiable path to the output")
        for c in self.cuts or []:
            lines.append(f"        no gradient path: {c.module} ({c.block}): {c.why}")
        return lines


class ShapeAnalysis(Extension):
    """Analyses the root model's first call and ends the run when that call returns (its
    graph captured by `graph`); `outcome` holds the result."""

    name = "shapes"

    def __init__(self, graph: GraphCapture, probes: Sequence[Tuple[int, ...]] = ()):
        self.graph = graph
        self.probes = probes
        self.outcome: Optional[ShapesOutcome] = None

    def on_first_call(self, session: SessionView, root: torch.nn.Module, args: tuple,
                      kwargs: Mapping[str, Any]) -> None:
        x = primary_input(args, kwargs)
        classes = _label_classes(session)
        report = solver.analyse(root, args, kwargs, label_classes=classes, probes=self.probes)
        self.outcome = ShapesOutcome(report, tuple(x.shape) if x is not None else (), classes)

    def on_output(self, session: SessionView, root: torch.nn.Module, output: Any) -> None:
        record = self.graph.record
        if self.outcome is not None and record is not None:
            self.outcome.graph = record
            self.outcome.cuts = None if record.kind == "modules" else gradient_cuts(record, root)
        raise StopRequested("static analysis done")


def run(script: str, args: Sequence[str], probes: Sequence[Tuple[int, ...]] = ()) -> ShapesOutcome:
    """Runs the script through the root model's first call and analyses that call."""
    graph = GraphCapture()
    analysis = ShapeAnalysis(graph, probes)
    res = run_script(script, args, TraceConfig(steps=1), lambda rows: None, extensions=[graph, analysis])
    if analysis.outcome is not None:
        return analysis.outcome
    return ShapesOutcome(None, (), None, res.error or "the script ended before calling a model "
                         "whose parameters an optimizer holds", res.crashed)


def _label_classes(session: SessionView) -> Optional[int]:
    loader = session.current_loader()
    if loader is None:
        return None
    labels = datamod.peek(loader.dataset).labels
    if labels is None or labels.is_floating_point() or not labels.numel():
        return None
    return int(labels.max()) + 1
