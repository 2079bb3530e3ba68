"""invar's own shape rules, for the modules where torch's symbolic path fails.

Two kinds: module forwards replaced on the meta copy (RNNs, below), and `PositionRanges`,
which gives an Embedding indexed by `torch.arange(T)` the requirement T <= its rows that
fake tensors cannot see (they carry no values).

torch runs an RNN on fake tensors through its decomposition, which unrolls the sequence
one time step at a time: that specialises the batch size and the sequence length to the
example's (guards B == 32, T == 40, so nothing holds for other sizes) and costs seconds
for a few dozen steps. A rule stands in for the module's forward on the meta copy only:
it computes the same output shapes with time-parallel matmuls whose FLOPs equal the
unrolled ones (the input projection of every step, the recurrent projection of every
step, the LSTM's output projection), leaving B and T symbolic.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


def rnn_forward(m: nn.RNNBase, input: Any, hx: Any = None) -> Tuple[torch.Tensor, Any]:
    """nn.LSTM / nn.GRU / nn.RNN forward on shapes: output, h_n (and c_n) as torch returns.

    Works in the input's own layout ([B, T, F], [T, B, F] or unbatched [T, F]) on fresh
    contiguous tensors: a matmul over a strided view would add a spurious guard T != 1."""
    if not isinstance(input, torch.Tensor):  # a PackedSequence: torch's own (unrolled) path
        return type(m).forward(m, input, hx)
    if input.dim() not in (2, 3):
        raise ValueError(f"{type(m).__name__}: expected a 2-D or 3-D input, got {input.dim()}-D")
    batched = input.dim() == 3
    dirs = 2 if m.bidirectional else 1
    width = m.proj_size or m.hidden_size
    lead = tuple(input.shape[:-1])
    states = (m.num_layers * dirs,) + ((lead[0 if m.batch_first else 1],) if batched else ())
    h_shape, c_shape = states + (width,), states + (m.hidden_size,)
    if hx is not None:
        given = hx if isinstance(hx, (tuple, list)) else (hx,)
        for h, want in zip(given, (h_shape, c_shape)):
            if tuple(h.shape) != want:  # a fixed-size initial state really pins the batch size
                raise RuntimeError(f"{type(m).__name__}: expected hidden size {want}, got {tuple(h.shape)}")
    x = input
    for layer in range(m.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            torch.matmul(x, getattr(m, "weight_ih" + sfx).t())          # input projection, every step
            h = x.new_empty(lead + (m.hidden_size,))
            if m.proj_size:
                h = torch.matmul(h, getattr(m, "weight_hr" + sfx).t())  # LSTM output projection
            torch.matmul(h, getattr(m, "weight_hh" + sfx).t())          # recurrent projection, every step
            outs.append(h)
        x = torch.cat(outs, -1) if dirs > 1 else outs[0]
    h_n = x.new_empty(h_shape)
    return (x, (h_n, x.new_empty(c_shape))) if m.mode == "LSTM" else (x, h_n)


# exact module type -> its forward on shapes (subclasses may override forward: not ruled)
MODULE_RULES: Dict[type, Callable[..., Any]] = {
    nn.LSTM: rnn_forward,  # unrolled per step by torch: specialises B and T
    nn.GRU: rnn_forward,   # likewise
    nn.RNN: rnn_forward,   # likewise
}


def batch_dim(m: nn.Module, input: Any) -> Optional[int]:
    """Which dim of a ruled module's input is the batch (an RNN's batch_first says), if any."""
    if isinstance(m, nn.RNNBase) and isinstance(input, torch.Tensor) and input.dim() == 3:
        return 0 if m.batch_first else 1
    return None


def rule_for(m: nn.Module) -> Optional[Callable[..., Any]]:
    """The own rule standing in for `m`'s forward, or None for torch's path."""
    return MODULE_RULES.get(type(m))


class PositionRanges(TorchFunctionMode):
    """Positions made by `torch.arange(end)` (and views of them) have the largest value
    end - 1, though a fake tensor carries no value: an Embedding of E rows indexed by them
    (GPT's positional table) requires end <= E, a requirement torch's shape path cannot
    see (an index out of range is a value error, not a shape error). `end_of` answers for
    an Embedding's input; the symbolic run turns it into a guard, a concrete run into the
    IndexError eager would raise."""

    # ops whose result holds the same values as their first argument
    SAME_VALUES = frozenset({"unsqueeze", "view", "expand", "expand_as", "reshape", "__getitem__", "repeat",
                             "to", "long", "int", "contiguous", "clone"})

    def __init__(self) -> None:
        super().__init__()
        self._ends: Dict[int, Tuple[torch.Tensor, Any]] = {}  # id -> (tensor, end): the tensor keeps the id

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if not isinstance(out, torch.Tensor):
            return out
        if name == "arange":
            end = kwargs.get("end", args[1] if len(args) > 1 else args[0] if args else None)
            if end is not None and kwargs.get("step", args[2] if len(args) > 2 else 1) == 1:
                self._ends[id(out)] = (out, end)
        elif name in self.SAME_VALUES and args and self.end_of(args[0]) is not None:
            self._ends[id(out)] = (out, self.end_of(args[0]))
        return out

    def end_of(self, t: Any) -> Any:
        """The `end` of the arange a tensor's values come from, None when not known."""
        entry = self._ends.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None
