"""GraphRecord: the root model's graph as plain data (tracer/graph.py captures it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Mapping, Optional, Tuple

Shapes = Tuple[Tuple[int, ...], ...]


@dataclass(frozen=True)
class GraphNode:
    """One node: an op, a module call, a parameter or an input (plain data)."""

    name: str
    op: str                        # placeholder | get_attr | call_module | call_function | call_method | output
    kind: str                      # canonical op kind: conv2d, relu, add, detach, softmax, param, input, ...
    module: str = ""               # the innermost module it belongs to ("": the root's own forward)
    inputs: Tuple[str, ...] = ()   # the nodes it reads
    params: Tuple[str, ...] = ()   # the parameters it holds or reads directly (qualified names)
    where: str = ""                # file:line of the forward that holds it ("": unknown)
    grad: bool = True              # False: it runs with gradients disabled (no_grad, inference_mode)
    shape: Optional[Shapes] = None  # output shapes at the first call (module calls; export: every node)


@dataclass(frozen=True)
class GraphRecord:
    """The root model's graph (plain data, no live tensors): how it was captured
    (`kind` fx | export | modules), why the preferred paths failed (`reason`), its nodes
    and its blocks (module prefixes, tracer/blocks.py)."""

    kind: str
    model: str
    reason: Optional[str]
    nodes: Tuple[GraphNode, ...] = ()
    blocks: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "reason": self.reason, "blocks": list(self.blocks),
                "nodes": [asdict(n) for n in self.nodes]}

    def summary(self) -> str:
        """One line: how the graph was captured and its size."""
        if self.kind == "modules":
            return f"module-call graph of {self.model}, {len(self.nodes)} modules ({self.reason})"
        why = f" ({self.reason})" if self.reason else ""
        return f"{'torch.fx' if self.kind == 'fx' else 'torch.export'} graph of {self.model}, {len(self.nodes)} nodes{why}"

    def with_shapes(self, shapes: Mapping[str, Shapes]) -> "GraphRecord":
        """The record with module calls' observed output shapes (module name -> shapes)."""
        nodes = tuple(replace(n, shape=shapes.get(n.module, n.shape)) if n.op == "call_module" else n
                      for n in self.nodes)
        return replace(self, nodes=nodes)
