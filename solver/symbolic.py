"""One forward pass of a meta copy of the model on fake tensors with symbolic sizes.

This is torch's own symbolic-shape machinery (research/shapes.md §3): a ShapeEnv collects
the guards the model's ops put on the input sizes, per-module hooks on the *copy* record
each module's symbolic output shape and which guards it added, and FlopCounterMode counts
FLOPs symbolically. The user's model is never touched: it is copied to the meta device
first (parameters and buffers as meta tensors, their data never copied), without the
user's module hooks, and runs with the global module hooks lifted (tracer/twin.py): the
user's hooks never see a forward that did not happen. The copy is called the way the
script called the model (solver/call.py). Modules torch's path cannot keep symbolic (RNNs)
run invar's own shape rules (solver/rules.py) on that copy instead. A guard is a
condition of the branch the example took, not always a requirement of the model:
`concrete_run` runs the same copy at fixed sizes, so that a rejection is confirmed before
it is reported (solver/confirm.py). These are private torch APIs (pinned torch;
tests/unit/test_solver.py fails loudly when an upgrade moves them).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import sympy
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from solver.call import CallSpec, TensorSlot
from solver.reasons import plain_reason, undecidable
from solver.rules import PositionRanges, batch_dim, rule_for
from tracer.calls import model_output
from tracer.twin import meta_twin, unseen


@dataclass
class SymbolicRun:
    """What the symbolic forward produced (sympy expressions, no live tensors kept)."""

    spec: CallSpec                          # how the model was called
    symbols: List[Any]                      # the primary input's dims: a sympy symbol or an int
    output: Optional[List[Any]]             # the output tensor's dims (sympy or int); None: no tensor
    records: List[Tuple[str, List[Any]]]    # leaf module name -> its first output's dims
    guards: List[Tuple[Any, str]]           # (sympy boolean, owning module or "")
    flops: Any                              # sympy expression or int
    activation_bytes: Any
    concrete: bool = False                  # fell back to concrete sizes
    # input symbol -> (the value the run pinned it to, module owning that guard or "")
    specialised: Dict[Any, Tuple[int, str]] = field(default_factory=dict)
    ruled: List[str] = field(default_factory=list)  # modules that ran an own rule
    batch_hints: List[Any] = field(default_factory=list)  # batch sizes ruled modules saw

    def sizes(self, values: Mapping[Any, int]) -> Dict[int, int]:
        """Primary dim index -> size, from values of the input symbols."""
        return {i: int(values[s]) for i, s in enumerate(self.symbols) if isinstance(s, sympy.Symbol) and s in values}

    @property
    def batch_index(self) -> int:
        """The primary input's batch dim: the one a sequence-first RNN reads its batch
        from, else the one the output's first dim follows, else 0."""
        for hint in self.batch_hints + ([self.output[0]] if self.output else []):
            if isinstance(hint, sympy.Symbol) and hint in self.symbols:
                return self.symbols.index(hint)
        return 0


def _expr(d: Any) -> Any:
    return d.node.expr if isinstance(d, torch.SymInt) else int(d)


def _first_tensor(t: Any) -> Optional[torch.Tensor]:
    """The first tensor of a (nested) output, None when it holds none."""
    if isinstance(t, torch.Tensor):
        return t
    return next((x for x in tree_leaves(t) if isinstance(x, torch.Tensor)), None)


def _dims(t: Any) -> Optional[List[Any]]:
    first = _first_tensor(t)
    return None if first is None else [_expr(d) for d in first.shape]


def _output_dims(out: Any) -> Optional[List[Any]]:
    """The dims of the tensor standing for the model's predictions (tracer/calls.py: the
    output itself, a `logits` field, else the first tensor that is not a loss)."""
    t = model_output(out)
    return None if t is None else [_expr(d) for d in t.shape]


def symbolic_run(model: nn.Module, spec: CallSpec, concrete: bool = False) -> SymbolicRun:
    """Runs a meta copy of `model`, called as `spec` says, on fake tensors whose primary
    input has symbolic batch and spatial/sequence sizes (the other tensors tied to them)."""
    import torch.fx.experimental._config as fx_config
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext
    from torch.utils.flop_counter import FlopCounterMode

    ruled: List[str] = []
    hints: List[Any] = []
    twin = _twin(model, ruled, hints)
    env = ShapeEnv(specialize_zero_one=False)
    mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
    x0 = spec.x0
    dyn = [isinstance(d, str) and not concrete for d in x0.dims]
    ctx = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC if d else DimDynamic.STATIC for d in dyn],
                                   constraint_sizes=[None] * len(dyn))
    primary = mode.from_tensor(torch.empty(x0.shape, dtype=x0.dtype, device="meta"), symbolic_context=ctx)
    # read before the forward: a specialised symbol later reads back as its value
    symbols = [_expr(d) for d in primary.shape]

    def fake(slot: TensorSlot) -> torch.Tensor:
        if slot is x0:
            return primary
        shape = [d if isinstance(d, int) else primary.shape[int(d[1:])] for d in slot.dims]
        with mode:
            return torch.empty(shape, dtype=slot.dtype, device="meta")
    args, kwargs = spec.build(fake)
    records: List[Tuple[str, List[Any]]] = []
    owners: Dict[int, str] = {}
    act_bytes: List[Any] = []
    start: Dict[str, Tuple[int, int]] = {}  # module -> (guards, records) when it was entered
    positions, bounds = PositionRanges(), []  # guards of positional tables: (end <= rows, module)
    handles = _position_hooks(twin, positions, lambda end, rows, name: bounds.append(
        (sympy.Le(_expr(end), rows), name)) if isinstance(end, torch.SymInt) else None)
    # Every module is hooked: a guard belongs to the innermost module running when it was
    # added (post hooks run inside out), and a module records its output when no module
    # inside it did: a leaf, or one whose children its forward bypasses (MultiheadAttention
    # uses out_proj's weight, never its forward).
    for name, m in twin.named_modules():
        if not name:
            continue

        def pre(mod: nn.Module, a: Any, name: str = name) -> None:
            start[name] = (len(env.guards), len(records))

        def post(mod: nn.Module, a: Any, out: Any, name: str = name) -> None:
            first_guard, first_record = start.get(name, (len(env.guards), len(records)))
            dims = _dims(out)
            if dims is not None and len(records) == first_record:
                records.append((name, dims))
                size = 1
                for d in dims:
                    size = size * d
                act_bytes.append(size * out_element_size(out))
            for i in range(first_guard, len(env.guards)):
                owners.setdefault(i, name)
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    counter = FlopCounterMode(display=False)
    try:
        with fx_config.patch(backed_size_oblivious=True), unseen(), mode, torch.no_grad(), counter, \
                positions, _quiet("torch._subclasses.fake_tensor"):
            out = twin(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    guards = [(g.expr, owners.get(i, "")) for i, g in enumerate(env.guards)] + bounds
    total = counter.get_total_flops()
    return SymbolicRun(
        spec=spec, symbols=symbols, output=_output_dims(out), records=records, guards=guards,
        flops=_expr(total) if isinstance(total, torch.SymInt) else int(total),
        activation_bytes=sympy.Add(*act_bytes) if act_bytes else 0,
        concrete=concrete, specialised=_specialised(env, symbols, guards), ruled=ruled,
        batch_hints=[_expr(h) for h in hints])


def _position_hooks(twin: nn.Module, positions: PositionRanges, bound: Callable[[Any, int, str], None]) -> List[Any]:
    """Pre-hooks on the copy's Embeddings calling `bound(end, rows, name)` when their input
    is `torch.arange(end)` (solver/rules.py)."""
    def check(name: str, m: nn.Embedding, a: Any) -> None:
        end = positions.end_of(a[0]) if a else None
        if end is not None:
            bound(end, m.num_embeddings, name)
    return [m.register_forward_pre_hook(lambda mod, a, name=name: check(name, mod, a))
            for name, m in twin.named_modules() if isinstance(m, nn.Embedding)]


def _twin(model: nn.Module, ruled: List[str], hints: List[Any]) -> nn.Module:
    """The meta twin (tracer/twin.py), own rules standing in where they apply."""
    twin = meta_twin(model)
    for name, m in twin.named_modules():
        rule = rule_for(m)
        if rule is not None:
            m.forward = _ruled(rule, m, name, ruled, hints)
    return twin


def _ruled(rule: Any, m: nn.Module, name: str, ruled: List[str], hints: List[Any]) -> Any:
    """`m`'s forward replaced by its rule, noting `name` in `ruled` once it runs and the
    batch size it saw in `hints`."""
    def forward(*args: Any, **kwargs: Any) -> Any:
        if name not in ruled:
            ruled.append(name)
        dim = batch_dim(m, args[0]) if args else None
        if dim is not None:
            hints.append(args[0].shape[dim])
        return rule(m, *args, **kwargs)
    return forward


def _specialised(env: Any, symbols: List[Any], guards: List[Tuple[Any, str]]) -> Dict[Any, Tuple[int, str]]:
    """Input symbols the run replaced by a constant (a guard s == c), with the guard's owner."""
    out: Dict[Any, Tuple[int, str]] = {}
    for s in (s for s in symbols if isinstance(s, sympy.Symbol)):
        value = env.replacements.get(s)
        if value is None or not getattr(value, "is_Integer", False):
            continue
        owner = next((o for g, o in guards if isinstance(g, sympy.Eq) and g.free_symbols == {s}), "")
        out[s] = (int(value), owner)
    return out


def out_element_size(out: Any) -> int:
    t = _first_tensor(out)
    return t.element_size() if t is not None else 0


@dataclass(frozen=True)
class ConcreteRun:
    """One forward of a meta copy at fixed sizes: the ground truth that the symbolic run's
    guards only approximate (torch records a guard for every branch it takes, e.g. a
    contiguity test asking whether a size is 1, not only for real shape requirements)."""

    shapes: Tuple[Tuple[int, ...], ...]  # every tensor argument's size it ran at
    output: Optional[Tuple[int, ...]]    # the output tensor's dims; None: failed or none
    error: str = ""                      # why the forward failed, in words ("" when it ran)
    module: str = ""                     # innermost module running when it failed ("": the model's own forward)
    decided: bool = True                 # False: the fake-tensor path cannot run some op here

    @property
    def ok(self) -> bool:
        return self.decided and not self.error


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silences a logger for the block: fake tensors log every failing kernel, and a
    failing kernel is an answer here, not news for the user's console."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def concrete_run(model: nn.Module, spec: CallSpec, sizes: Mapping[int, int]) -> ConcreteRun:
    """Runs a meta copy of `model`, called as `spec` says, on fake tensors at fixed sizes:
    the primary input's dim i at `sizes[i]` (the example's where missing), every tensor
    tied to it moved along. The same own rules as the symbolic run. Never raises for the model."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    shapes = tuple(spec.shapes(sizes))
    twin = _twin(model, [], [])
    # a shape env only for data-dependent sizes (nonzero): the inputs' sizes are static
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    active: List[str] = []  # the modules running, outermost first

    def leave(mod: nn.Module, a: Any, out: Any) -> None:  # returns None: the output stays
        active.pop()

    def out_of_range(end: Any, rows: int, name: str) -> None:
        if int(end) > rows:  # what eager raises for a position past the table
            raise IndexError(f"index out of range in self: position {int(end) - 1} of a {rows}-row `{name}`")
    positions = PositionRanges()
    handles = _position_hooks(twin, positions, out_of_range)
    for name, m in twin.named_modules():
        if name:
            handles.append(m.register_forward_pre_hook(lambda mod, a, name=name: active.append(name)))
            handles.append(m.register_forward_hook(leave))
    try:
        args, kwargs = spec.build(lambda slot: mode.from_tensor(
            torch.empty(spec.shape(slot, sizes), dtype=slot.dtype, device="meta"), static_shapes=True))
        with unseen(), mode, torch.no_grad(), positions, _quiet("torch._subclasses.fake_tensor"):
            out = twin(*args, **kwargs)
        dims = _output_dims(out)
        return ConcreteRun(shapes, None if dims is None else tuple(int(d) for d in dims))
    except Exception as e:  # the model's own errors are the answer, of any type
        return ConcreteRun(shapes, None, plain_reason(e), active[-1] if active else "",
                           decided=not isinstance(e, undecidable()))
    finally:
        for h in handles:
            h.remove()
