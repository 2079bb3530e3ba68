"""Building a GraphRecord from the root model's first call: torch.fx symbolic tracing,
else torch.export (non-strict) of a meta copy, else the module calls the hooks saw.

fx traces the real model with proxies (no tensor math runs, no hook is called); its
tracer here notes, for every node, the user's source line and whether gradients are on
(a `torch.no_grad()` block in a forward really switches them off while fx traces it).
Where fx fails (data-dependent or shape-dependent Python, keyword-only forwards,
tuple-valued arguments), torch.export runs a meta copy without the user's hooks
(tracer/twin.py) on meta tensors: nothing of the user's runs or changes either way.
Op kinds are normalised across the two paths (`nn.Conv2d`, `F.conv2d` and
`aten.conv2d` are all `conv2d`), so that facts compare across them.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import operator
import os
import re
import sys
from dataclasses import replace
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_leaves, tree_map

from tracer.blocks import WRAPPERS
from tracer.graph_facts import output_tensors
from tracer.graph_record import GraphNode, GraphRecord
from tracer.twin import meta_twin, unseen

_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(os.path.abspath(__file__))
_INT_DTYPES = {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool}
_INT_CASTS = {"long", "int", "short", "byte", "bool", "char"}
# operator and method names -> op kind
_ALIASES = {"iadd": "add", "radd": "add", "imul": "mul", "rmul": "mul", "isub": "sub", "rsub": "sub",
            "truediv": "div", "itruediv": "div", "floordiv": "div", "floor_divide": "div", "true_divide": "div",
            "imatmul": "matmul", "neg": "neg", "scaled_dot_product_attention": "attention",
            "multihead_attention": "attention", "multi_head_attention_forward": "attention",
            "batch_norm1d": "batch_norm", "batch_norm2d": "batch_norm", "batch_norm3d": "batch_norm",
            "instance_norm1d": "instance_norm", "instance_norm2d": "instance_norm", "dropout1d": "dropout",
            "dropout2d": "dropout", "dropout3d": "dropout", "feature_dropout": "dropout", "native_dropout": "dropout",
            "re_lu": "relu", "re_lu6": "relu6", "leaky_re_lu": "leaky_relu", "ge_lu": "gelu", "si_lu": "silu",
            "pre_lu": "prelu", "se_lu": "selu", "ce_lu": "celu", "e_lu": "elu", "convolution": "conv",
            "addmm": "linear", "gt": "gt", "greater": "gt", "less": "lt", "greater_equal": "ge", "less_equal": "le",
            "not_equal": "ne", "equal": "eq", "getattr": "getattr", "wrap_with_set_grad_enabled": "no_grad",
            "cross_entropy_loss": "cross_entropy", "nll_loss_nd": "nll_loss", "nll_loss2d": "nll_loss"}


def snake(name: str) -> str:
    """`LogSoftmax` -> `log_softmax`, `BatchNorm2d` -> `batch_norm2d`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def normal_kind(name: str) -> str:
    """An op's canonical kind: operator dunders, in-place suffixes and aliases folded."""
    name = name.strip("_")
    name = _ALIASES.get(name, name)
    return name.rstrip("_") or "op"


def module_kind(m: nn.Module) -> str:
    """A module's op kind: `nn.Softmax` -> softmax; a parametrized module (spectral_norm,
    weight_norm through torch.nn.utils.parametrize) is its original class's op."""
    cls = type(m)
    if parametrize.is_parametrized(m) and cls.__bases__:
        cls = cls.__bases__[0]  # `ParametrizedLinear` is a Linear
    return normal_kind(snake(cls.__name__))


def user_line(depth: int = 1) -> str:
    """`file.py:39`: the innermost frame of the user's code on the stack between torch's
    frames and invar's own, i.e. the line of the forward being traced; "" when the op
    lives in torch's own code (an `nn.Sequential`'s children). `depth`: frames to skip
    (the caller's own)."""
    f = sys._getframe(depth + 1)
    while f is not None:
        path = f.f_code.co_filename
        if path.startswith(_OWN_DIR):
            return ""
        if not path.startswith(_TORCH_DIR) and not path.startswith("<"):
            return f"{os.path.basename(path)}:{f.f_lineno}"
        f = f.f_back
    return ""


class _LocatingTracer(fx.Tracer):
    """fx's tracer, noting each node's source line and whether gradients are on."""

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta["invar_where"] = user_line(depth=1)
        node.meta["invar_grad"] = torch.is_grad_enabled()
        return node


def _first_sentence(e: BaseException) -> str:
    """The first sentence of an error's message: why a capture path failed, in brief."""
    line = (str(e).strip().splitlines() or [""])[0]
    return (line.split(". ")[0] or type(e).__name__)[:200]


def capture_traced(root: nn.Module, args: tuple, kwargs: Optional[Mapping[str, Any]], blocks: Tuple[str, ...]
                   ) -> Tuple[Optional[GraphRecord], str]:
    """(record, "") by fx, else by torch.export with fx's failure as the reason, else
    (None, why both failed) for the module-call fallback. A data-parallel wrapper's graph
    is its module's, under the wrapper's names (`module.fc1`)."""
    if isinstance(root, WRAPPERS):
        record, why = capture_traced(root.module, args, kwargs, blocks)
        return (None if record is None else _under(record, "module", type(root).__name__)), why
    try:
        return capture_fx(root, args, kwargs, blocks), ""
    except Exception as e:  # fx raises many types; all mean "try the next path"
        fx_reason = f"fx: {_first_sentence(e)}"
    try:
        return capture_export(root, args, kwargs, blocks, fx_reason), ""
    except Exception as e:  # so does export
        return None, f"{fx_reason}; export: {_first_sentence(e)}"


def _under(record: GraphRecord, prefix: str, wrapper: str) -> GraphRecord:
    """The record of a wrapped module with its names as the wrapper has them."""
    def name(n: str) -> str:
        return f"{prefix}.{n}" if n else prefix
    nodes = tuple(replace(n, module=name(n.module), params=tuple(name(p) for p in n.params)) for n in record.nodes)
    return replace(record, model=f"{wrapper}({record.model})", nodes=nodes)


def capture_fx(root: nn.Module, args: tuple, kwargs: Optional[Mapping[str, Any]], blocks: Tuple[str, ...]
               ) -> GraphRecord:
    """fx symbolic tracing, non-tensor arguments fixed to the values the script passed."""
    tracer = _LocatingTracer()
    with unseen(), torch.enable_grad():  # so that only the forward's own no_grad blocks read as off
        graph = tracer.trace(root, concrete_args=_concrete_args(root, args, kwargs))
    names = _param_names(root)
    nodes = []
    for n in graph.nodes:
        kind, params, module = _fx_kind(root, n, names)
        nodes.append(GraphNode(name=n.name, op=n.op, kind=kind, module=module, inputs=_inputs(n), params=params,
                               where=n.meta.get("invar_where", ""), grad=n.meta.get("invar_grad", True)))
    return GraphRecord("fx", type(root).__name__, None, tuple(nodes), blocks)


def _concrete_args(root: nn.Module, args: tuple, kwargs: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The forward's arguments that hold no tensor, as the script passed them (defaults
    included): fx specialises on them instead of tracing `if targets is None` with a proxy."""
    try:
        sig = inspect.signature(root.forward)
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
            return None
        bound = sig.bind(*args, **dict(kwargs or {}))
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items()
            if not any(isinstance(x, torch.Tensor) for x in tree_leaves(v))} or None


def _param_names(root: nn.Module) -> Dict[int, str]:
    """id(parameter) -> its qualified name (the first, for tied parameters)."""
    return {id(p): name for name, p in root.named_parameters()}


def _inputs(n: fx.Node) -> Tuple[str, ...]:
    found: List[str] = []
    fx.node.map_arg((n.args, n.kwargs), lambda a: found.append(a.name))
    return tuple(dict.fromkeys(found))


def _module_of(n: fx.Node) -> str:
    stack = n.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _fx_kind(root: nn.Module, n: fx.Node, names: Dict[int, str]) -> Tuple[str, Tuple[str, ...], str]:
    """(kind, parameters, module) of an fx node."""
    if n.op == "call_module":
        m = root.get_submodule(n.target)
        return module_kind(m), tuple(dict.fromkeys(names[id(p)] for p in m.parameters() if id(p) in names)), n.target
    if n.op == "get_attr":
        obj: Any = root
        for part in str(n.target).split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Parameter) and id(obj) in names:
            return "param", (names[id(obj)],), names[id(obj)].rpartition(".")[0]
        return "buffer", (), _module_of(n)
    if n.op in ("placeholder", "output"):
        return ("input" if n.op == "placeholder" else "output"), (), ""
    if n.op == "call_function" and n.target is getattr and len(n.args) > 1:
        return ("data" if n.args[1] == "data" else "getattr"), (), _module_of(n)
    name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    if n.target in (operator.getitem,):
        name = "getitem"
    return _cast_or(normal_kind(name), n.args[1:], n.kwargs), (), _module_of(n)


def _cast_or(kind: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """`int_cast` for a cast to an integer or bool dtype (`.long()`, `.to(torch.int64)`), else `kind`."""
    if kind in _INT_CASTS:
        return "int_cast"
    if kind in ("to", "type"):
        dtypes = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.dtype)]
        if any(d in _INT_DTYPES for d in dtypes):
            return "int_cast"
    return kind


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """torch.export logs what it specialises; an answer here, not news for the user."""
    logs = [logging.getLogger(n) for n in names]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


class _Flat(nn.Module):
    """Exports the model as one module returning its output's tensors as a tuple: export
    refuses output types it does not know (a model's own output object)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Tuple[torch.Tensor, ...]:
        return tuple(output_tensors(self.model(*args, **kwargs)))


def _unwrapped(name: str) -> str:
    """A name inside `_Flat` as the user's model knows it."""
    return name[len("model."):] if name.startswith("model.") else "" if name == "model" else name


def capture_export(root: nn.Module, args: tuple, kwargs: Optional[Mapping[str, Any]], blocks: Tuple[str, ...],
                   reason: str) -> GraphRecord:
    """torch.export (non-strict) of a meta copy in training mode (the graph gradients flow
    through, the same whichever mode the first call ran in), on meta tensors shaped like
    the call's."""
    flat = _Flat(meta_twin(root).train())
    meta = tree_map(lambda x: torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x,
                    (tuple(args), dict(kwargs or {})))
    with unseen(), _quiet_loggers("torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes",
                                           "torch._dynamo"):
        program = torch.export.export(flat, meta[0], meta[1], strict=False)
    sig = program.graph_signature
    params = {k: _unwrapped(v) for k, v in sig.inputs_to_parameters.items()}
    nodes, grad = [], True
    for n in program.graph_module.graph.nodes:
        target = str(n.target)
        if n.op == "call_function" and "_set_grad_enabled" in target and n.args:
            grad = bool(n.args[0])  # a no_grad block of the forward, as export writes it
            continue
        kind, owned, module = _export_kind(n, params)
        off = kind == "no_grad" and n.args and n.args[0] is False
        nodes.append(GraphNode(name=n.name, op=n.op, kind=kind, module=module, inputs=_inputs(n), params=owned,
                               where=_stack_line(n.meta.get("stack_trace")), grad=grad and not off,
                               shape=_val_shapes(n.meta.get("val"))))
    return GraphRecord("export", type(root).__name__, reason, tuple(nodes), blocks)


def _export_kind(n: fx.Node, params: Dict[str, str]) -> Tuple[str, Tuple[str, ...], str]:
    """(kind, parameters, module) of a node of an exported program."""
    if n.op == "placeholder":
        if n.name in params:
            return "param", (params[n.name],), params[n.name].rpartition(".")[0]
        return "input", (), ""
    if n.op == "output":
        return "output", (), ""
    if n.op == "get_attr":
        return "submodule", (), _unwrapped(_module_of(n))
    target = n.target
    name = getattr(target, "__name__", None) if not hasattr(target, "_schema") else target._schema.name
    name = str(name or target).split("::")[-1].split(".")[0]
    if target is operator.getitem:
        name = "getitem"
    return _cast_or(normal_kind(name), n.args[1:], n.kwargs), (), _unwrapped(_module_of(n))


def _stack_line(trace: Optional[str]) -> str:
    """The innermost user frame of an export node's stack trace, as `file.py:39`."""
    found = ""
    for path, line in re.findall(r'File "([^"]+)", line (\d+)', trace or ""):
        if not path.startswith((_TORCH_DIR, _OWN_DIR)):
            found = f"{os.path.basename(path)}:{line}"
    return found


def _val_shapes(val: Any) -> Optional[Tuple[Tuple[int, ...], ...]]:
    tensors = [v for v in tree_leaves(val) if isinstance(v, torch.Tensor)]
    try:
        return tuple(tuple(int(d) for d in t.shape) for t in tensors) or None
    except (TypeError, ValueError):  # symbolic sizes
        return None


def capture_modules(root: nn.Module, calls: Sequence[Tuple[str, str, Any]], blocks: Tuple[str, ...],
                    reason: str) -> GraphRecord:
    """The module calls the hooks saw during the first call, in order (leaf modules):
    op kinds and shapes, no data flow."""
    names = _param_names(root)
    nodes = []
    for i, (name, _, shapes) in enumerate(calls):
        try:
            m = root.get_submodule(name) if name else root
        except AttributeError:
            continue
        if any(True for _ in m.children()):
            continue  # a container: its leaves are the ops
        owned = tuple(dict.fromkeys(names[id(p)] for p in m.parameters() if id(p) in names))
        nodes.append(GraphNode(name=f"{name}@{i}", op="call_module", kind=module_kind(m), module=name,
                               params=owned, shape=tuple(tuple(s) for s in shapes)))
    return GraphRecord("modules", type(root).__name__, reason, tuple(nodes), blocks)
