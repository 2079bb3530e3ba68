"""The root model's input and output, and its modes (docs/observations.md: `input.*`,
`output.*`, `model.*`)."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import torch
from torch import nn

from tracer import stats
from tracer.calls import model_output, primary_input
from tracer.pending import Pending

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


class ModelIO:
    """Input statistics, modes and dropout at a recorded root call, output statistics at
    its end. Module lists are cached per root."""

    def __init__(self) -> None:
        self._dropouts_applied = 0
        self._modules_cache: Optional[Tuple[nn.Module, List[nn.Module]]] = None
        self._dropout_cache: Optional[Tuple[nn.Module, List[nn.Module]]] = None

    def dropout_applied(self) -> None:
        """A dropout call inside a recorded root call dropped units."""
        self._dropouts_applied += 1

    def on_input(self, p: Pending, step: int, phase: str, root: nn.Module, args: tuple,
                 kwargs: Mapping[str, Any]) -> None:
        self._dropouts_applied = 0
        x = primary_input(args, kwargs)
        if x is not None:
            p.value(step, phase, "input.shape", stats.shape_text(x.shape[1:]))
            p.value(step, phase, "input.batch", x.shape[0] if x.dim() else 1)
            p.value(step, phase, "input.dtype", stats.dtype_text(x.dtype))
            if x.is_floating_point() and x.dim() >= 3:
                p.value(step, phase, "input.side", x.shape[-1])
            p.stats(step, phase, "input.", stats.input_stats(x))
        p.value(step, phase, "model.training", root.training)
        modes = [m.training for m in self._modules(root)]
        p.value(step, phase, "model.train_mode_fraction", sum(modes) / len(modes))
        dropouts = [m.training for m in self._dropouts(root)]
        if dropouts:
            p.value(step, phase, "model.dropout_active", sum(dropouts) / len(dropouts))

    def on_output(self, p: Pending, step: int, phase: str, output: Any) -> None:
        out = model_output(output)
        if out is None:
            return
        # Dropout that really dropped during this forward (modules and functional calls alike).
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
