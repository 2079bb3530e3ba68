"""What a call of the root model was given and what it returned, read the way people pass
them: positional tensors, keyword tensors (`model(input_ids=..., attention_mask=...,
labels=...)`), and outputs that are tensors, tuples, dicts, dataclasses or HuggingFace
`ModelOutput`s (docs/observations.md, `input.*` and `output.*`).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import nn

# Keyword arguments that carry the labels, not the input (HF models compute their loss from them).
LABEL_KEYS = frozenset({"labels", "label", "targets", "target", "y", "start_positions", "end_positions"})
# Keyword arguments that are the model input when a call passes only keywords, most specific
# first (a dict of several tensors: the first of these it holds is the input).
INPUT_KEYS = ("input_ids", "pixel_values", "input_values", "input_features", "inputs_embeds", "x", "input",
              "inputs", "src", "images", "image", "features")
# Output fields that are predictions, in order of preference, and names that mark a loss.
PREDICTION_KEYS = ("logits", "prediction_logits", "predictions", "start_logits", "last_hidden_state")
MAX_NAMED_INPUTS = 8  # keyword tensors recorded by name per call


def _inner_code() -> Optional[Any]:
    # torch 2.13's nn.Module._call_impl runs the hooks from a closure `inner` holding the
    # call's `kwargs`; global forward pre-hooks are not given them (tested: the contract test).
    consts = getattr(getattr(nn.Module, "_call_impl", None), "__code__", None)
    return next((c for c in getattr(consts, "co_consts", ()) if getattr(c, "co_name", None) == "inner"), None)


_INNER = _inner_code()
_EMPTY: Mapping[str, Any] = {}


def call_kwargs(max_depth: int = 6) -> Mapping[str, Any]:
    """The keyword arguments of the module call whose global forward pre-hook is running
    (read from `_call_impl`'s frame, within `max_depth` frames of the caller); empty when
    there are none or the frame is not found (another torch)."""
    if _INNER is None:
        return _EMPTY
    f = sys._getframe(1)
    for _ in range(max_depth):
        if f is None:
            break
        if f.f_code is _INNER:
            kw = f.f_locals.get("kwargs")
            return kw if isinstance(kw, dict) and kw else _EMPTY
        f = f.f_back
    return _EMPTY


def _tensor(v: Any) -> Optional[torch.Tensor]:
    return v if isinstance(v, torch.Tensor) else None


def primary_input(args: tuple, kwargs: Mapping[str, Any] = _EMPTY) -> Optional[torch.Tensor]:
    """The model input of a call: its first positional tensor; for a call with keywords
    only, the first of INPUT_KEYS it holds, else its first keyword tensor that is not a label."""
    x = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if x is not None or not kwargs:
        return x
    for key in INPUT_KEYS:
        t = _tensor(kwargs.get(key))
        if t is not None:
            return t
    return next((v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and k not in LABEL_KEYS), None)


def named_inputs(kwargs: Mapping[str, Any], primary: Optional[torch.Tensor]) -> List[Tuple[str, torch.Tensor]]:
    """The call's other keyword tensors (`attention_mask`, `token_type_ids`, ...), by name;
    labels are not inputs, nor are scalars (counts such as HF's `num_items_in_batch`)."""
    out = [(k, v) for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.dim() and v is not primary
           and k not in LABEL_KEYS and k.isidentifier()]
    return out[:MAX_NAMED_INPUTS]


def call_labels(args: tuple, kwargs: Mapping[str, Any]) -> Optional[torch.Tensor]:
    """Labels passed to the model itself (`labels=`, `targets=`), if any."""
    return next((v for k, v in kwargs.items() if k in LABEL_KEYS and isinstance(v, torch.Tensor)), None)


def batch_dim(x: torch.Tensor, batch_size: Optional[int]) -> int:
    """Which dimension of the input `x` is the batch: the one of size `batch_size` (the
    loader's batch size, or the labels' length) when dim 0 is not and exactly one other is
    (time-major sequences, `[T, B]`), else 0. A dim 0 that divides `batch_size` stays the
    batch: a micro-batch of gradient accumulation (`x.chunk(k)`)."""
    if batch_size is None or x.dim() < 2 or x.shape[0] == 0 or batch_size % x.shape[0] == 0:
        return 0
    dims = [d for d in range(1, x.dim()) if x.shape[d] == batch_size]
    return dims[0] if len(dims) == 1 else 0


def _fields(output: Any) -> Optional[Iterator[Tuple[str, Any]]]:
    """(name, value) of a mapping or dataclass output (a `ModelOutput` is both), else None."""
    if isinstance(output, Mapping):
        return iter(list(output.items()))
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return ((f.name, getattr(output, f.name, None)) for f in dataclasses.fields(output))
    return None


def _is_loss(name: str, t: torch.Tensor, losses: Tuple[int, ...]) -> bool:
    return "loss" in name.lower() or t.dim() == 0 or id(t) in losses


def model_output(output: Any, losses: Tuple[int, ...] = ()) -> Optional[torch.Tensor]:
    """The tensor that stands for a call's predictions, never its loss: the output itself;
    of a mapping, dataclass or `ModelOutput` its `logits` (or the first field that is not a
    loss); of a tuple or list its first tensor that is not a loss (a scalar, or a tensor a
    loss function returned during the call: `ids` in `losses`); an object's `logits`."""
    if isinstance(output, torch.Tensor):
        return output
    fields = _fields(output)
    if fields is not None:
        named: Dict[str, torch.Tensor] = {k: v for k, v in fields if isinstance(v, torch.Tensor)}
        for key in PREDICTION_KEYS:
            if key in named:
                return named[key]
        return next((v for k, v in named.items() if not _is_loss(k, v, losses)), None)
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor) and not _is_loss("", o, losses)), None)
    return _tensor(getattr(output, "logits", None))
