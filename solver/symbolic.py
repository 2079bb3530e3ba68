"""One forward pass of a meta copy of the model on fake tensors with symbolic sizes.

This is torch's own symbolic-shape machinery (research/shapes.md §3): a ShapeEnv collects
the guards the model's ops put on the input sizes, per-module hooks on the *copy* record
each module's symbolic output shape and which guards it added, and FlopCounterMode counts
FLOPs symbolically. The user's model is never touched: it is deep-copied to the meta
device first. Modules torch's path cannot keep symbolic (RNNs) run invar's own shape
rules (solver/rules.py) on that copy instead. These are private torch APIs (pinned torch;
tests/test_solver.py fails loudly when an upgrade moves them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

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

    twin = copy.deepcopy(model).to("meta").eval()
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
    start: Dict[str, int] = {}
    handles = []
    ruled: List[str] = []
    for name, m in twin.named_modules():
        rule = rule_for(m)
        if rule is not None:
            m.forward = _ruled(rule, m, name, ruled)
        if name and not any(True for _ in m.children()):
            def pre(mod: nn.Module, args: Any, name: str = name) -> None:
                start[name] = len(env.guards)

            def post(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                dims = _dims(out)
                if dims is not None:
                    records.append((name, dims))
                    size = 1
                    for d in dims:
                        size = size * d
                    act_bytes.append(size * out_element_size(out))
                for i in range(start.get(name, len(env.guards)), len(env.guards)):
                    owners.setdefault(i, name)
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
    counter = FlopCounterMode(display=False)
    try:
        with fx_config.patch(backed_size_oblivious=True), mode, torch.no_grad(), counter:
            out = twin(*fakes)
    finally:
        for h in handles:
            h.remove()
    out_dims = _dims(out if not isinstance(out, dict) else next(iter(out.values()), None))
    guards = [(g.expr, owners.get(i, "")) for i, g in enumerate(env.guards)]
    total = counter.get_total_flops()
    return SymbolicRun(
        input_symbols=symbols, output=out_dims, records=records, guards=guards,
        flops=_expr(total) if isinstance(total, torch.SymInt) else int(total),
        activation_bytes=sympy.Add(*act_bytes) if act_bytes else 0,
        concrete=concrete, specialised=_specialised(env, symbols, guards), ruled=ruled)


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
