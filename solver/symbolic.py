"""One forward pass of a meta copy of the model on fake tensors with symbolic sizes.

This is torch's own symbolic-shape machinery (research/shapes.md §3): a ShapeEnv collects
the guards the model's ops put on the input sizes, per-module hooks on the *copy* record
each module's symbolic output shape and which guards it added, and FlopCounterMode counts
FLOPs symbolically. The user's model is never touched: it is copied to the meta device
first (parameters and buffers as meta tensors, their data never copied). Modules torch's
path cannot keep symbolic (RNNs) run invar's own shape rules (solver/rules.py) on that
copy instead. A guard is a condition of the branch the example took, not always a
requirement of the model: `concrete_run` runs the same copy at fixed sizes, so that a
rejection is confirmed before it is reported (solver/confirm.py). These are private
torch APIs (pinned torch; tests/test_solver.py fails loudly when an upgrade moves them).
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import sympy
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from solver.rules import rule_for


@dataclass
class SymbolicRun:
    """What the symbolic forward produced (sympy expressions, no live tensors kept)."""

    input_symbols: List[List[Any]]          # per input: per dim a sympy symbol or an int
    output: Optional[List[Any]]             # first output tensor's dims (sympy or int); None: no tensor
    records: List[Tuple[str, List[Any]]]    # leaf module name -> its first output's dims
    guards: List[Tuple[Any, str]]           # (sympy boolean, owning module or "")
    flops: Any                              # sympy expression or int
    activation_bytes: Any
    concrete: bool = False                  # fell back to concrete sizes
    notes: List[str] = field(default_factory=list)
    # input symbol -> (the value the run pinned it to, module owning that guard or "")
    specialised: Dict[Any, Tuple[int, str]] = field(default_factory=dict)
    ruled: List[str] = field(default_factory=list)  # modules that ran an own rule


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


def dynamic_dims(x: torch.Tensor) -> List[bool]:
    """Which dims get a symbol: batch and spatial/sequence dims; channels and feature
    widths stay concrete (a weight pins them anyway)."""
    n = x.dim()
    if n == 0:
        return []
    if not x.is_floating_point():
        return [True] * n                    # token ids [B, T]
    if n == 2:
        return [True, False]                 # [B, features]
    if n == 3:
        return [True, True, False]           # [B, T, features]
    return [True, False] + [True] * (n - 2)  # [B, C, H, W, ...]


def symbolic_run(model: nn.Module, inputs: Sequence[torch.Tensor], concrete: bool = False) -> SymbolicRun:
    """Runs a meta copy of `model` on symbolic-size fake versions of `inputs`."""
    import torch.fx.experimental._config as fx_config
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext
    from torch.utils.flop_counter import FlopCounterMode

    ruled: List[str] = []
    twin = _meta_twin(model, ruled)
    env = ShapeEnv(specialize_zero_one=False)
    mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
    fakes = []
    for x in inputs:
        x = x.detach().to("meta")
        dyn = [d and not concrete for d in dynamic_dims(x)]
        ctx = StatelessSymbolicContext(
            dynamic_sizes=[DimDynamic.DYNAMIC if d else DimDynamic.STATIC for d in dyn],
            constraint_sizes=[None] * x.dim())
        fakes.append(mode.from_tensor(x, symbolic_context=ctx))
    # read before the forward: a specialised symbol later reads back as its value
    symbols = [[_expr(d) for d in f.shape] for f in fakes]
    records: List[Tuple[str, List[Any]]] = []
    owners: Dict[int, str] = {}
    act_bytes: List[Any] = []
    start: Dict[str, Tuple[int, int]] = {}  # module -> (guards, records) when it was entered
    handles = []
    # Every module is hooked: a guard belongs to the innermost module running when it was
    # added (post hooks run inside out), and a module records its output when no module
    # inside it did: a leaf, or one whose children its forward bypasses (MultiheadAttention
    # uses out_proj's weight, never its forward).
    for name, m in twin.named_modules():
        if not name:
            continue

        def pre(mod: nn.Module, args: Any, name: str = name) -> None:
            start[name] = (len(env.guards), len(records))

        def post(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
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
        with fx_config.patch(backed_size_oblivious=True), mode, torch.no_grad(), counter, \
                _quiet("torch._subclasses.fake_tensor"):
            out = twin(*fakes)
    finally:
        for h in handles:
            h.remove()
    out_dims = _output_dims(out)
    guards = [(g.expr, owners.get(i, "")) for i, g in enumerate(env.guards)]
    total = counter.get_total_flops()
    return SymbolicRun(
        input_symbols=symbols, output=out_dims, records=records, guards=guards,
        flops=_expr(total) if isinstance(total, torch.SymInt) else int(total),
        activation_bytes=sympy.Add(*act_bytes) if act_bytes else 0,
        concrete=concrete, specialised=_specialised(env, symbols, guards), ruled=ruled)


def _meta_twin(model: nn.Module, ruled: List[str]) -> nn.Module:
    """A meta-device copy of `model` in eval mode, own rules standing in where they apply."""
    # parameters and buffers enter the copy as meta tensors: their data is never copied
    memo: Dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if type(t) in (nn.Parameter, torch.Tensor) and id(t) not in memo:
            meta = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(meta, t.requires_grad) if type(t) is nn.Parameter else meta
    twin = copy.deepcopy(model, memo).to("meta").eval()
    for name, m in twin.named_modules():
        rule = rule_for(m)
        if rule is not None:
            m.forward = _ruled(rule, m, name, ruled)
    return twin


def _output_dims(out: Any) -> Optional[List[Any]]:
    """The model output's dims: its first tensor, or a dict's first value's."""
    return _dims(out if not isinstance(out, dict) else next(iter(out.values()), None))


def _ruled(rule: Any, m: nn.Module, name: str, ruled: List[str]) -> Any:
    """`m`'s forward replaced by its rule, noting `name` in `ruled` once it runs."""
    def forward(*args: Any, **kwargs: Any) -> Any:
        if name not in ruled:
            ruled.append(name)
        return rule(m, *args, **kwargs)
    return forward


def _specialised(env: Any, symbols: List[List[Any]], guards: List[Tuple[Any, str]]
                 ) -> Dict[Any, Tuple[int, str]]:
    """Input symbols the run replaced by a constant (a guard s == c), with the guard's owner."""
    out: Dict[Any, Tuple[int, str]] = {}
    for s in (s for dims in symbols for s in dims if isinstance(s, sympy.Symbol)):
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

    shapes: Tuple[Tuple[int, ...], ...]  # the input sizes it ran at
    output: Optional[Tuple[int, ...]]    # the output's first tensor's dims; None: failed or none
    error: str = ""                      # why the forward failed ("" when it ran)
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


def _undecidable() -> Tuple[type, ...]:
    """Exceptions that say the fake-tensor path lacks an op, not that the sizes are wrong."""
    from torch._subclasses import fake_tensor as ft
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
    return (ft.DataDependentOutputException, ft.DynamicOutputShapeException, ft.UnsupportedOperatorException,
            ft.UnsupportedFakeTensorException, GuardOnDataDependentSymNode, NotImplementedError)


def concrete_run(model: nn.Module, inputs: Sequence[torch.Tensor], shapes: Sequence[Sequence[int]]
                 ) -> ConcreteRun:
    """Runs a meta copy of `model` on fake inputs of the given concrete sizes (dtypes as
    `inputs`), with the same own rules as the symbolic run. Never raises for the model."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    sizes = tuple(tuple(int(d) for d in s) for s in shapes)
    twin = _meta_twin(model, [])
    # a shape env only for data-dependent sizes (nonzero): the inputs' sizes are static
    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    active: List[str] = []  # the modules running, outermost first

    def enter(mod: nn.Module, args: Any, name: str) -> None:
        active.append(name)

    def leave(mod: nn.Module, args: Any, out: Any) -> None:  # returns None: the output stays
        active.pop()
    handles = []
    for name, m in twin.named_modules():
        if name:
            handles.append(m.register_forward_pre_hook(lambda mod, args, name=name: enter(mod, args, name)))
            handles.append(m.register_forward_hook(leave))
    try:
        fakes = [mode.from_tensor(torch.empty(s, dtype=x.dtype, device="meta"), static_shapes=True)
                 for x, s in zip(inputs, sizes)]
        with mode, torch.no_grad(), _quiet("torch._subclasses.fake_tensor"):
            out = twin(*fakes)
        dims = _output_dims(out)
        return ConcreteRun(sizes, None if dims is None else tuple(int(d) for d in dims))
    except Exception as e:  # the model's own errors are the answer, of any type
        text = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        return ConcreteRun(sizes, None, text, active[-1] if active else "",
                           decided=not isinstance(e, _undecidable()))
    finally:
        for h in handles:
            h.remove()
