"""The root model's input and output, and its modes (docs/observations.md: `input.*`,
`output.*`, `model.*`)."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from tracer import stats
from tracer.pending import Pending

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def model_input(args: tuple) -> Optional[torch.Tensor]:
    """The model input of a root call: its first tensor argument."""
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


def model_output(output: Any) -> Optional[torch.Tensor]:
    """The tensor that stands for a root call's output: the output itself, the first tensor
    of a tuple, list or dict, or an output object's `logits`."""
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    if isinstance(output, dict):
        return next((o for o in output.values() if isinstance(o, torch.Tensor)), None)
    if isinstance(output, torch.Tensor):
        return output
    out = getattr(output, "logits", None)
    return out if isinstance(out, torch.Tensor) else None


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

    def on_input(self, p: Pending, step: int, phase: str, root: nn.Module, args: tuple) -> None:
        self._dropouts_applied = 0
        x = model_input(args)
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
