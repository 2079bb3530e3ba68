"""GraphRecord: the root model's torch.fx graph with concrete shapes from the first batch,
captured by the `GraphCapture` extension.

Shapes come from the real forward the tracer already observed (module hooks), never from
an extra forward: re-running the model would update BatchNorm statistics and consume
dropout's random numbers. A model fx cannot trace (shape-dependent control flow, ...)
falls back to the module-call graph seen by the hooks, with the reason recorded.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import fx, nn

from tracer.extension import Extension, SessionView

ModuleCall = Tuple[str, str, List[List[int]]]  # qualified name, class, output shapes


@dataclass(frozen=True)
class GraphRecord:
    """Topology and per-node shapes of the root model (plain data, no live tensors)."""

    kind: str  # "fx" or "modules"
    model: str  # class name of the root model
    reason: Optional[str]  # why fx was not used
    nodes: Tuple[Dict[str, Any], ...] = field(default_factory=tuple)

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["nodes"] = list(self.nodes)
        return d

    def summary(self) -> str:
        if self.kind == "fx":
            return f"torch.fx graph of {self.model}, {len(self.nodes)} nodes"
        return f"module-call graph of {self.model}, {len(self.nodes)} modules (fx: {self.reason})"


def _arg_names(args: Any) -> List[str]:
    names: List[str] = []
    fx.node.map_arg(args, lambda n: names.append(n.name))
    return names


class GraphCapture(Extension):
    """Captures the GraphRecord at the end of the first recorded root call, from the module
    calls the session saw during it; `record` is None when the model was never called."""

    name = "graph"

    def __init__(self) -> None:
        self.record: Optional[GraphRecord] = None
        self._calls: Optional[List[ModuleCall]] = None  # collecting while not None

    def on_first_call(self, session: SessionView, root: nn.Module, args: tuple) -> None:
        self._calls = []

    def on_module_output(self, session: SessionView, module: nn.Module, output: Any) -> None:
        if self._calls is not None:
            self._calls.append((session.module_name(module), type(module).__name__, output_shapes(output)))

    def on_output(self, session: SessionView, root: nn.Module, output: Any) -> None:
        if self._calls is not None:
            calls, self._calls = self._calls, None
            self.record = capture(root, calls)

    def summary(self) -> str:
        """One line: what was captured, or why nothing was."""
        return self.record.summary() if self.record else "not captured (the root model was never called)"


def capture(root: nn.Module, module_calls: List[ModuleCall]) -> GraphRecord:
    """Builds the record; `module_calls` are (qualified name, class, output shapes) in call order."""
    shapes = {name: out for name, _, out in module_calls}
    try:
        gm = fx.symbolic_trace(root)
    except Exception as e:  # fx raises many types; all mean "use the fallback"
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        nodes = tuple({"name": n or "(root)", "op": "call_module", "target": cls, "shape": out}
                      for n, cls, out in module_calls)
        return GraphRecord("modules", type(root).__name__, reason, nodes)
    nodes = []
    for node in gm.graph.nodes:
        target = node.target if isinstance(node.target, str) else getattr(
            node.target, "__name__", str(node.target))
        nodes.append({"name": node.name, "op": node.op, "target": target,
                      "args": _arg_names(node.args),
                      "shape": shapes.get(node.target) if node.op == "call_module" else None})
    return GraphRecord("fx", type(root).__name__, None, tuple(nodes))


def output_shapes(out: Any) -> List[List[int]]:
    """Shapes of the tensors in a module's output (tensor, tuple/list, dict)."""
    if isinstance(out, torch.Tensor):
        return [list(out.shape)]
    if isinstance(out, (tuple, list)):
        return [list(o.shape) for o in out if isinstance(o, torch.Tensor)]
    if isinstance(out, dict):
        return [list(o.shape) for o in out.values() if isinstance(o, torch.Tensor)]
    return []
