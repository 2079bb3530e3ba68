"""The structure of the script's call of its model, so that the meta copy is called the
same way: `model(idx, targets)`, `model(x, hidden)`, `model(input_ids=..., labels=...)`.

The *primary* input is the tracer's model input (tracer/calls.py: the first positional
tensor, else `input_ids`, `pixel_values`, ... of the keyword arguments): its batch and spatial or sequence dims become symbols. Every other tensor is
tied to it: a dim whose size equals the primary's at the same position is the same symbol
(a target [B, T] for token ids [B, T], an attention mask), a dim whose size equals the
primary's batch size is the batch symbol (a hidden state [layers, B, H], labels [B]);
the rest keep their example size. Everything that is not a tensor (None, flags, ints,
nested tuples' structure) is passed through as the script passed it. So a size the solver
tries (B=1, T=7) is tried with a target and a hidden state of that size too, as the
script would pass them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.utils import _pytree as pytree

from tracer.calls import primary_input

Dim = Union[int, str]  # a fixed size, or "d{i}": the primary input's dim i


def dynamic_dims(x: torch.Tensor) -> List[bool]:
    """Which dims of the primary input get a symbol: batch and spatial/sequence dims;
    channels and feature widths stay concrete (a weight pins them anyway)."""
    n = x.dim()
    if n == 0:
        return []
    if not x.is_floating_point():
        return [True] * n                    # token ids [B, T]
    if n == 2:
        return [True, False]                 # [B, features]
    if n == 3:
        return [True, True, False]           # [B, T, features] or sequence-first [T, B, features]
    return [True, False] + [True] * (n - 2)  # [B, C, H, W, ...]


@dataclass(frozen=True)
class TensorSlot:
    """A tensor argument of the call: its example shape and dtype, and per dim a fixed
    size or the primary input's dim it follows."""

    shape: Tuple[int, ...]
    dtype: torch.dtype
    dims: Tuple[Dim, ...]

    def at(self, sizes: Mapping[int, int]) -> Tuple[int, ...]:
        """The shape when the primary's dims have `sizes` (dim index -> size; missing: example)."""
        return tuple(d if isinstance(d, int) else sizes.get(_index(d), self.shape[i])
                     for i, d in enumerate(self.dims))


def _index(key: str) -> int:
    return int(key[1:])


@dataclass(frozen=True)
class CallSpec:
    """How the script called its model: the (args, kwargs) structure with TensorSlots
    for its tensors; `primary` indexes the primary input among `leaves`."""

    treedef: Any
    leaves: Tuple[Any, ...]
    primary: int

    @classmethod
    def of(cls, args: Any, kwargs: Optional[Mapping[str, Any]] = None) -> "CallSpec":
        """The call's structure; TypeError when it holds no tensor."""
        args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
        leaves, treedef = pytree.tree_flatten((args, dict(kwargs or {})))
        x = primary_input(args, kwargs or {})  # the tracer's `input.*` are about it too
        primary = next((i for i, leaf in enumerate(leaves) if leaf is x), None) if x is not None else \
            next((i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)), None)
        if primary is None:
            raise TypeError("the model call has no tensor argument to analyse")
        x0 = leaves[primary]
        dyn = dynamic_dims(x0)
        first = tuple(f"d{i}" if d else int(s) for i, (d, s) in enumerate(zip(dyn, x0.shape)))
        slots = [x if not isinstance(x, torch.Tensor) else
                 TensorSlot(tuple(int(s) for s in x.shape), x.dtype, first if i == primary else _tied(x, x0, dyn))
                 for i, x in enumerate(leaves)]
        return cls(treedef, tuple(slots), primary)

    @property
    def x0(self) -> TensorSlot:
        """The primary input."""
        return self.leaves[self.primary]

    def slots(self) -> List[TensorSlot]:
        return [s for s in self.leaves if isinstance(s, TensorSlot)]

    def shape(self, slot: TensorSlot, sizes: Mapping[int, int]) -> Tuple[int, ...]:
        """A tensor's shape when the primary's dims have `sizes` (dim index -> size, the
        example's where missing; for the primary itself, fixed dims such as channels too)."""
        if slot is self.x0:
            return tuple(sizes.get(i, s) for i, s in enumerate(slot.shape))
        return slot.at(sizes)

    def shapes(self, sizes: Mapping[int, int]) -> List[Tuple[int, ...]]:
        """Every tensor's shape, in order, when the primary's dims have `sizes`."""
        return [self.shape(s, sizes) for s in self.slots()]

    def build(self, make: Callable[[TensorSlot], Any]) -> Tuple[tuple, Dict[str, Any]]:
        """(args, kwargs) with every tensor replaced by `make(slot)`."""
        leaves = [make(x) if isinstance(x, TensorSlot) else x for x in self.leaves]
        args, kwargs = pytree.tree_unflatten(leaves, self.treedef)
        return args, kwargs

    def describe(self) -> str:
        """The call in words: `model(Tensor[32, 40], targets=Tensor[32, 40])`."""
        args, kwargs = self.build(lambda s: _Shown(s))
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        return f"model({', '.join(parts)})"


class _Shown:
    def __init__(self, slot: TensorSlot):
        self.slot = slot

    def __repr__(self) -> str:
        return f"Tensor[{', '.join(map(str, self.slot.shape))}]"


def _tied(x: torch.Tensor, x0: torch.Tensor, dyn: Sequence[bool]) -> Tuple[Dim, ...]:
    """A secondary tensor's dims: the primary's symbol at the same position when the
    sizes agree, else the batch symbol when the size is the batch size, else fixed."""
    out: List[Dim] = []
    for i, s in enumerate(int(v) for v in x.shape):
        if i < x0.dim() and dyn[i] and s == int(x0.shape[i]):
            out.append(f"d{i}")
        elif dyn and dyn[0] and x0.dim() and s == int(x0.shape[0]):
            out.append("d0")
        else:
            out.append(s)
    return tuple(out)
