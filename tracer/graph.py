"""GraphRecord: the root model's graph, captured at its first call by the `GraphCapture`
extension, and the graph facts recorded from it as observations (`graph.*`, step 0).

Capture (tracer/graph_build.py) tries torch.fx symbolic tracing, then torch.export
(non-strict, on a meta copy), then the module-call order the hooks saw during the first
call, and records why a path failed. Nodes carry the module they belong to, the source
line of the forward that holds them and, for module calls, the output shapes observed at
the first call (from the real forward the tracer already observed: never an extra
forward, which would update BatchNorm statistics and consume dropout's random numbers).

The facts (tracer/graph_facts.py) are recorded at the first call, before the first
backward: per block its op kinds, its gradient-blocking ops and the parametrised modules
cut off from the output; at the first loss, the op chain between the last parametrised
module and the loss and whether it fits the loss (docs/graph.md).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from tracer import graph_facts
from tracer.blocks import block_prefixes
from tracer.extension import Extension, SessionView
from tracer.graph_build import capture_modules, capture_traced
from tracer.graph_record import GraphNode, GraphRecord, Shapes

__all__ = ["GraphCapture", "GraphNode", "GraphRecord", "output_shapes"]


class GraphCapture(Extension):
    """Captures the GraphRecord at the root model's first call and records the graph facts
    (`graph.*`, docs/graph.md) at step 0; `record` is None when the model was never called."""

    name = "graph"

    def __init__(self) -> None:
        self.record: Optional[GraphRecord] = None
        self._calls: Optional[List[Tuple[str, str, Shapes]]] = None  # module calls of the first call
        self._failed = ""          # why fx and export failed, for the module-call fallback
        # the first call's output tensors, held weakly until the loss that consumes one is seen
        self._outputs: Optional[List[Any]] = None

    def on_first_call(self, session: SessionView, root: nn.Module, args: tuple,
                      kwargs: Mapping[str, Any]) -> None:
        blocks = tuple(block_prefixes(root, session.config.block_depth))
        self._calls = []
        self.record, self._failed = capture_traced(root, args, kwargs, blocks)
        if self.record is not None:
            graph_facts.record_blocks(session, self.record, root)

    def on_module_output(self, session: SessionView, module: nn.Module, output: Any) -> None:
        if self._calls is not None:
            self._calls.append((session.module_name(module) or "", type(module).__name__, output_shapes(output)))

    def on_output(self, session: SessionView, root: nn.Module, output: Any) -> None:
        if self._calls is None:
            return
        calls, self._calls = self._calls, None
        if self.record is None:
            self.record = capture_modules(root, calls, tuple(block_prefixes(root, session.config.block_depth)),
                                          self._failed)
            graph_facts.record_blocks(session, self.record, root)
        else:
            self.record = self.record.with_shapes({name: shapes for name, _, shapes in calls})
        self._outputs = graph_facts.output_refs(output)

    def on_loss(self, session: SessionView, name: str, pair: tuple, result: Any) -> None:
        if self._outputs is not None:
            self._record_head(session, name, pair[0])

    def on_step(self, session: SessionView, optimizer: torch.optim.Optimizer) -> None:
        if self._outputs is not None:
            self._record_head(session, "", None)  # no loss function was seen before the step

    def _record_head(self, session: SessionView, loss: str, loss_input: Any) -> None:
        assert self.record is not None and self._outputs is not None
        element = graph_facts.output_element(self._outputs, loss_input)
        self._outputs = None
        graph_facts.record_head(session, self.record, loss, element)

    def summary(self) -> str:
        """One line: what was captured, or why nothing was."""
        return self.record.summary() if self.record else "not captured (the root model was never called)"

    def facts(self) -> Dict[str, Any]:
        return {"graph_kind": self.record.kind} if self.record else {}


def output_shapes(out: Any) -> Shapes:
    """Shapes of the tensors in a module's output (tensor, tuple/list, dict)."""
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape),)
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return tuple(tuple(o.shape) for o in values if isinstance(o, torch.Tensor))
