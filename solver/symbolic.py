"""One forward pass of a meta copy of the model on fake tensors with symbolic sizes.

This is torch's own symbolic-shape machinery (research/shapes.md §3): a ShapeEnv collects
the guards the model's ops put on the input sizes, per-module hooks on the *copy* record
each module's symbolic output shape and which guards it added, and FlopCounterMode counts
FLOPs symbolically. The user's model is never touched: it is deep-copied to the meta
device first. These are private torch APIs (pinned torch; tests/test_solver.py fails
loudly when an upgrade moves them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import sympy
import torch
from torch import nn


@dataclass
class SymbolicRun:
    """What the symbolic forward produced (sympy expressions, no live tensors kept)."""

    input_symbols: List[List[Any]]          # per input: per dim a sympy symbol or an int
    output: List[Any]                       # output dims (sympy or int)
    records: List[Tuple[str, List[Any]]]    # leaf module name -> its first output's dims
    guards: List[Tuple[Any, str]]           # (sympy boolean, owning module or "")
    flops: Any                              # sympy expression or int
    activation_bytes: Any
    concrete: bool = False                  # fell back to concrete sizes
    notes: List[str] = field(default_factory=list)


def _expr(d: Any) -> Any:
    return d.node.expr if isinstance(d, torch.SymInt) else int(d)


def _dims(t: Any) -> Optional[List[Any]]:
    if isinstance(t, torch.Tensor):
        return [_expr(d) for d in t.shape]
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return [_expr(d) for d in t[0].shape]
    return None


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
    records: List[Tuple[str, List[Any]]] = []
    owners: Dict[int, str] = {}
    act_bytes: List[Any] = []
    start: Dict[str, int] = {}
    handles = []
    for name, m in twin.named_modules():
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
    out_dims = _dims(out if not isinstance(out, dict) else next(iter(out.values())))
    guards = [(g.expr, owners.get(i, "")) for i, g in enumerate(env.guards)]
    total = counter.get_total_flops()
    return SymbolicRun(
        input_symbols=[[_expr(d) for d in f.shape] for f in fakes],
        output=out_dims or [], records=records, guards=guards,
        flops=_expr(total) if isinstance(total, torch.SymInt) else int(total),
        activation_bytes=sympy.Add(*act_bytes) if act_bytes else 0,
        concrete=concrete)


def out_element_size(out: Any) -> int:
    t = out if isinstance(out, torch.Tensor) else out[0]
    return t.element_size()
