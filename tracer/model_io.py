"""The root model's input and output, and its modes (docs/observations.md: `input.*`,
`output.*`, `model.*`)."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import torch
from torch import nn

from tracer import stats
from tracer.calls import batch_dim, call_labels, model_output, named_inputs, primary_input
from tracer.pending import Pending

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


class ModelIO:
    """Input statistics, modes and dropout at a recorded root call, output statistics at
    its end. Module lists are cached per root."""

    def __init__(self) -> None:
        self._dropouts_applied = 0
        self._modules_cache: Optional[Tuple[nn.Module, List[nn.Module]]] = None
        self._dropout_cache: Optional[Tuple[nn.Module, List[nn.Module]]] = None
        self._batch_dim: Optional[int] = None  # the input's batch dimension, found at the first call
        self.sees_inside = True  # False while the model runs compiled (its dropout calls are not seen)

    def dropout_applied(self) -> None:
        """A dropout call inside a recorded root call dropped units."""
        self._dropouts_applied += 1

    def on_input(self, p: Pending, step: int, phase: str, root: nn.Module, args: tuple,
                 kwargs: Mapping[str, Any], loader_batch: Optional[int]) -> None:
        """The call's input (positional or keyword: `input.*`), its other keyword tensors by
        name (`input.{name}.*`) and the model's modes; `loader_batch`: the batch size of the
        loader being consumed, if any (which input dimension is the batch)."""
        self._dropouts_applied = 0
        x = primary_input(args, kwargs)
        if x is not None:
            b = self._batch_of(x, loader_batch, call_labels(args, kwargs))
            p.value(step, phase, "input.shape", stats.shape_text(_without(x.shape, b)))
            p.value(step, phase, "input.batch", x.shape[b] if x.dim() else 1)
            p.value(step, phase, "input.dtype", stats.dtype_text(x.dtype))
            if x.is_floating_point() and x.dim() >= 3:
                p.value(step, phase, "input.side", x.shape[-1])
            p.stats(step, phase, "input.", stats.input_stats(x))
        for name, t in named_inputs(kwargs, x):
            prefix = f"input.{name}."
            p.value(step, phase, prefix + "shape", stats.shape_text(_without(t.shape, self._batch_dim or 0)))
            p.value(step, phase, prefix + "dtype", stats.dtype_text(t.dtype))
            p.stats(step, phase, prefix, stats.input_stats(t) if t.is_floating_point() else stats.index_stats(t))
        p.value(step, phase, "model.training", root.training)
        modes = [m.training for m in self._modules(root)]
        p.value(step, phase, "model.train_mode_fraction", sum(modes) / len(modes))
        dropouts = [m.training for m in self._dropouts(root)]
        if dropouts:
            p.value(step, phase, "model.dropout_active", sum(dropouts) / len(dropouts))

    def _batch_of(self, x: torch.Tensor, loader_batch: Optional[int], labels: Optional[torch.Tensor]) -> int:
        # decided once, at the first call (full batches: a last partial one could match anything)
        if self._batch_dim is None:
            hint = loader_batch if loader_batch else (len(labels) if labels is not None and labels.dim() else None)
            self._batch_dim = batch_dim(x, hint)
        return self._batch_dim if self._batch_dim < x.dim() else 0

    def on_output(self, p: Pending, step: int, phase: str, output: Any, losses: Tuple[int, ...] = ()) -> None:
        """The call's predictions (never its loss: `losses` are the ids of what loss
        functions returned during the call) and the dropout that dropped units in it."""
        out = model_output(output, losses)
        if out is None:
            return
        # Dropout that really dropped during this forward (modules and functional calls alike).
        if self.sees_inside:
            p.value(step, phase, "model.dropout_applied", self._dropouts_applied)
        self._dropouts_applied = 0
        p.value(step, phase, "output.shape", stats.shape_text(out.shape[1:]))
        if out.dim() >= 1:
            p.value(step, phase, "output.width", out.shape[-1])
        p.stats(step, phase, "output.", stats.output_stats(out))

    def _modules(self, root: nn.Module) -> List[nn.Module]:
        if self._modules_cache is None or self._modules_cache[0] is not root:
            self._modules_cache = (root, list(root.modules()))
        return self._modules_cache[1]

    def _dropouts(self, root: nn.Module) -> List[nn.Module]:
        if self._dropout_cache is None or self._dropout_cache[0] is not root:
            self._dropout_cache = (root, [m for m in root.modules() if isinstance(m, DROPOUTS)])
        return self._dropout_cache[1]


def _without(shape: torch.Size, dim: int) -> Tuple[int, ...]:
    return tuple(d for i, d in enumerate(shape) if i != dim)
