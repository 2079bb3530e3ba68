"""Graph facts: what the root model's graph says before the first backward, recorded as
observations at step 0 (docs/graph.md).

* `graph.blocks`: the blocks whose forward has ops;
* `graph.block.{b}.ops`: the block's op kinds (a structural fingerprint; shape plumbing
  such as view/getitem and gradient-blocking ops are left out);
* `graph.block.{b}.blocking`: its gradient-blocking ops (detach, `.data`, argmax, round,
  comparisons, integer casts, anything under `no_grad`/`inference_mode`), each with the
  source line of the forward that holds it;
* `graph.block.{b}.cut_off`: the block's parametrised modules with no differentiable path
  to the model's output (networkx over the graph, blocking ops carrying no gradient),
  each with the node that cuts it off and its source line;
* `graph.head`: the op kinds between the last parametrised op and the loss input;
  `graph.loss_head`: those of them that do not fit the loss (a softmax before a loss that
  expects logits).

A value is a list of items `kind`, `kind*count` or `kind @ context`, separated by "; ",
or `none`; the context (a source line, what cuts a module off) is for people and never
compared (invariants/templates/graph.py).
"""
from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import networkx as nx
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from tracer.blocks import ROOT_BLOCK

if TYPE_CHECKING:
    from tracer.extension import SessionView
    from tracer.graph_record import GraphNode, GraphRecord

# Ops that move, view or select data without computing: left out of fingerprints and chains.
PLUMBING = frozenset({
    "input", "output", "param", "buffer", "submodule", "getitem", "getattr", "size", "dim", "numel", "contiguous",
    "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "transpose", "permute", "t", "expand",
    "expand_as", "clone", "alias", "to", "type", "type_as", "float", "double", "half", "bfloat16", "cpu", "cuda",
    "chunk", "split", "unbind", "identity", "assert", "assert_tensor_metadata", "sym_size", "sym_numel",
    "arange", "zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "device", "slice",
    "select", "lift_fresh_copy", "unsafe_view", "view_as", "reshape_as"})
# Ops whose output carries no gradient back to their inputs.
BLOCKING = frozenset({"detach", "data", "argmax", "argmin", "round", "floor", "ceil", "sign", "trunc", "eq",
                      "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "int_cast",
                      "no_grad", "bucketize", "searchsorted"})
# Ops that turn scores into (log-)probabilities: what a loss that expects logits must not get.
NORMALISERS = {"softmax": "probabilities", "log_softmax": "log-probabilities", "sigmoid": "probabilities"}
# What a loss function expects as its input; losses not named here take any values.
LOSS_INPUTS = {"cross_entropy": "logits", "binary_cross_entropy_with_logits": "logits",
               "multi_margin_loss": "logits", "nll_loss": "log-probabilities",
               "binary_cross_entropy": "probabilities", "kl_div": "log-probabilities"}
NONE = "none"


def blocking(node: "GraphNode") -> bool:
    """Whether a node passes no gradient to its inputs."""
    return node.kind in BLOCKING or not node.grad


def block_of(module: str, blocks: Sequence[str]) -> str:
    """The block a module belongs to: its longest block prefix, else the root's own."""
    best = ""
    for b in blocks:
        if (module == b or module.startswith(b + ".")) and len(b) > len(best):
            best = b
    return best or ROOT_BLOCK


def items_text(items: Iterable[Tuple[str, str]]) -> str:
    """`kind*count @ context; ...` sorted by kind (the first context of a kind), or `none`."""
    counts: Counter = Counter()
    context: Dict[str, str] = {}
    for kind, ctx in items:
        counts[kind] += 1
        context.setdefault(kind, ctx)
    parts = []
    for kind in sorted(counts):
        text = kind + (f"*{counts[kind]}" if counts[kind] > 1 else "")
        parts.append(text + (f" @ {context[kind]}" if context[kind] else ""))
    return "; ".join(parts) or NONE


def _by_block(record: "GraphRecord") -> Dict[str, List["GraphNode"]]:
    out: Dict[str, List["GraphNode"]] = {}
    for n in record.nodes:
        if n.kind not in PLUMBING or n.params:
            out.setdefault(block_of(n.module, record.blocks), []).append(n)
    return out


def op_kinds(record: "GraphRecord") -> Dict[str, str]:
    """Per block, its op kinds (gradient-blocking ones left out)."""
    return {b: items_text((n.kind, "") for n in nodes if not blocking(n) and n.kind not in PLUMBING)
            for b, nodes in _by_block(record).items()}


def blocking_ops(record: "GraphRecord") -> Dict[str, str]:
    """Per block, its gradient-blocking ops with their source lines."""
    return {b: items_text((n.kind if n.grad else "no_grad", _at(n)) for n in nodes if blocking(n))
            for b, nodes in _by_block(record).items()}


def _at(n: "GraphNode") -> str:
    """Where a node is: its source line, else its module, else its name in the graph."""
    return n.where or (f"in `{n.module}`" if n.module else f"node {n.name}")


def flow_graph(record: "GraphRecord") -> nx.DiGraph:
    """The data flow: an edge from each node to every node that reads it."""
    g = nx.DiGraph()
    for n in record.nodes:
        g.add_node(n.name)
        for i in n.inputs:
            g.add_edge(i, n.name)
    return g


@dataclass(frozen=True)
class Cut:
    """A parametrised module (or a single parameter) with no differentiable path to the
    model's output: what cuts it off (`by`: a blocking op kind such as detach or no_grad,
    `unused` when the forward never uses it, `unreached` when its result never reaches the
    output) and that op's source line."""

    block: str
    module: str
    by: str
    where: str = ""

    @property
    def why(self) -> str:
        if self.by == "unused":
            return "never used by the forward"
        if self.by == "unreached":
            return "its output does not reach the model's output"
        return f"cut off by `{self.by}`" + (f" at {self.where}" if self.where else "")


def _param_cuts(record: "GraphRecord", params: Iterable[str]) -> Dict[str, Optional[Tuple[str, str]]]:
    """Per parameter, None when a differentiable path leads from a node using it to the
    output, else (what cuts it off, where): networkx over the data flow, the blocking ops'
    edges carrying no gradient."""
    cuts: Dict[str, Optional[Tuple[str, str]]] = {p: ("unused", "") for p in params}
    out_node = next((n.name for n in record.nodes if n.op == "output"), None)
    if out_node is None:
        return cuts
    g = flow_graph(record)
    nodes = {n.name: n for n in record.nodes}
    reachable = nx.ancestors(g, out_node)
    flowing = nx.ancestors(g.subgraph([k for k in g if k not in nodes or not blocking(nodes[k])]), out_node)
    order = {n.name: i for i, n in enumerate(record.nodes)}
    for n in (n for n in record.nodes if n.params):
        if n.name in flowing:
            cut = None
        elif n.name not in reachable:
            cut = ("unreached", "")
        else:  # the first blocking op from the node on (itself, when it runs under no_grad)
            on_path = ({n.name} | nx.descendants(g, n.name)) & (reachable | {n.name})
            first = min((nodes[k] for k in on_path if k in nodes and blocking(nodes[k])),
                        key=lambda b: order[b.name], default=None)
            cut = ("unreached", "") if first is None else (first.kind if first.grad else "no_grad", _at(first))
        for p in n.params:
            if cuts.get(p, ()) is not None:  # one path that carries a gradient is enough
                cuts[p] = cut
    return cuts


def gradient_cuts(record: "GraphRecord", root: nn.Module) -> List[Cut]:
    """Every parametrised module cut off from the output, the widest one where a whole
    subtree is (`layer2.0.downsample` for its conv and BatchNorm)."""
    owners: Dict[str, List[str]] = {}
    for name, _ in root.named_parameters():
        owners.setdefault(name.rpartition(".")[0], []).append(name)
    cuts = _param_cuts(record, (p for params in owners.values() for p in params))
    whole = {m for m, params in owners.items() if all(cuts[p] for p in params)}
    out: List[Cut] = []
    for module, params in owners.items():
        block = block_of(module, record.blocks)
        if module in whole:
            top = _widest(module, block, set(owners), whole) or ROOT_BLOCK
            if all(c.module != top for c in out):
                out.append(Cut(block, top, *cuts[params[0]]))  # type: ignore[misc]
        else:
            out += [Cut(block, p, *cuts[p]) for p in params if cuts[p]]  # type: ignore[misc]
    return out


def cut_off(record: "GraphRecord", root: nn.Module) -> Dict[str, List[Tuple[str, str]]]:
    """Per block with parameters, its modules cut off from the output and why."""
    blocks = {block_of(name.rpartition(".")[0], record.blocks): [] for name, _ in root.named_parameters()}
    for c in gradient_cuts(record, root):
        blocks[c.block].append((c.module, c.why))
    return blocks


def _widest(module: str, block: str, owners: Set[str], whole: Set[str]) -> str:
    """The widest module around `module` (within its block) whose parametrised modules
    are all cut off: `layer2.0.downsample` for its conv and BatchNorm."""
    parts = module.split(".")
    for i in range(len(block.split(".")) - 1 if block != ROOT_BLOCK else 0, len(parts)):
        prefix = ".".join(parts[:i + 1])
        inside = [m for m in owners if m == prefix or m.startswith(prefix + ".")]
        if inside and all(m in whole for m in inside):
            return prefix
    return module


def record_blocks(session: "SessionView", record: "GraphRecord", root: nn.Module) -> None:
    """Records each block's op kinds and, where the graph has data flow (fx, export),
    its gradient-blocking ops and the modules cut off from the output (train, step 0)."""
    kinds = op_kinds(record)
    session.record("train", "graph.blocks", items_text((block, "") for block in kinds))
    for block, text in kinds.items():
        session.record("train", f"graph.block.{block}.ops", text)
    if record.kind == "modules":
        return  # no data flow: which op feeds which is unknown
    for block, text in blocking_ops(record).items():
        session.record("train", f"graph.block.{block}.blocking", text)
    for block, items in cut_off(record, root).items():
        session.record("train", f"graph.block.{block}.cut_off", items_text(items))


def output_tensors(output: Any) -> List[torch.Tensor]:
    """The tensors of a root call's output in order: pytree leaves (tensor, tuple, list,
    dict), or an output object's tensor attributes (`.loss`, `.logits`)."""
    if not isinstance(output, (torch.Tensor, tuple, list, dict)) and hasattr(output, "__dict__"):
        output = list(vars(output).values())
    return [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]


def output_refs(output: Any) -> List[Any]:
    """Weak references to the tensors of a root call's output (`output_tensors`)."""
    return [weakref.ref(t) for t in output_tensors(output)]


def output_element(refs: Sequence[Any], loss_input: Any) -> Optional[int]:
    """Which output tensor the loss got (its index), None when it got something else."""
    return next((i for i, r in enumerate(refs) if loss_input is not None and r() is loss_input), None)


def head_chain(record: "GraphRecord", element: Optional[int]) -> Tuple[Optional["GraphNode"], List["GraphNode"], str]:
    """(the last parametrised node, the ops between it and the loss input, the loss if
    the graph holds it): from a loss node of the graph (a model computing its own loss)
    or from the output element the loss got."""
    nodes = {n.name: n for n in record.nodes}
    losses = [n for n in record.nodes if n.kind in LOSS_INPUTS or n.kind in ("mse_loss", "l1_loss")]
    loss = ""
    if losses:
        start, loss = nodes.get(losses[0].inputs[0]) if losses[0].inputs else None, losses[0].kind
    else:
        out = next((n for n in record.nodes if n.op == "output"), None)
        ins = [nodes[i] for i in out.inputs] if out else []
        start = ins[element] if element is not None and element < len(ins) else (ins[0] if ins else None)
    chain: List["GraphNode"] = []
    while start is not None and not _parametrised(start, nodes):
        if start.kind not in PLUMBING:
            chain.append(start)
        data = [nodes[i] for i in start.inputs if i in nodes and nodes[i].kind != "param"]
        start = data[0] if data else None
    return start, list(reversed(chain)), loss


def _parametrised(n: "GraphNode", nodes: Dict[str, "GraphNode"]) -> bool:
    """A module call holding parameters, or an op reading a parameter (export, get_attr)."""
    return (bool(n.params) and n.kind != "param") or any(nodes[i].kind == "param" for i in n.inputs if i in nodes)


def record_head(session: "SessionView", record: "GraphRecord", loss: str, element: Optional[int]) -> None:
    """Records `graph.head` and `graph.loss_head` (train, step 0)."""
    if record.kind == "modules":
        return
    last, chain, own_loss = head_chain(record, element)
    loss = own_loss or loss
    after = f"after `{last.module or last.name}`" if last is not None else "after the input"
    session.record("train", "graph.head", items_text((n.kind, after) for n in chain))
    expects = LOSS_INPUTS.get(loss)
    wrong = [] if expects is None else [n for n in chain if n.kind in NORMALISERS]
    gets = NORMALISERS[wrong[-1].kind] if wrong else "logits"
    items = [] if expects is None or gets == expects else \
        [(wrong[-1].kind if wrong else "no normaliser",
          f"{after}, before {loss}, which expects {expects}" + (f", {wrong[-1].where}" if wrong and wrong[-1].where else ""))]
    session.record("train", "graph.loss_head", items_text(items))
