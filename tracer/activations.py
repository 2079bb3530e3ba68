"""Activations in training forwards: dead-unit fraction and range per activation module and
per rectifier called as a function (docs/observations.md, `act.*`). Taken on detailed
steps only (a pass over every activation)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Set

import torch
from torch import nn

from tracer import stats
from tracer.blocks import ACTIVATIONS, RECTIFIERS
from tracer.pending import Pending

MAX_FUNCTIONAL_RELUS = 32  # functional rectifier calls observed per module and forward


class ActivationObserver:
    """Each activation once per step; functional rectifiers counted per calling module."""

    def __init__(self, enabled: bool, prefix_of: Callable[[nn.Module], str]):
        self.enabled = enabled
        self._prefix_of = prefix_of  # a module's name in the root ("" for the root)
        self._seen: Set[str] = set()            # activations recorded in this step
        self._relu_calls: Dict[int, int] = {}   # calling module id -> functional relus so far

    def root_called(self) -> None:
        self._relu_calls = {}

    def next_step(self) -> None:
        self._seen.clear()

    def on_module_output(self, p: Pending, step: int, detailed: bool, name: Optional[str],
                         module: nn.Module, output: Any) -> None:
        """A module inside a recorded training forward returned `output`."""
        if (self.enabled and detailed and isinstance(module, ACTIVATIONS)
                and isinstance(output, torch.Tensor) and name not in self._seen):
            self._seen.add(name)  # type: ignore[arg-type]
            p.stats(step, "train", f"act.{name}.", stats.activation_stats(output, isinstance(module, RECTIFIERS)))

    def on_functional(self, p: Pending, step: int, detailed: bool, parent: Optional[nn.Module], out: Any) -> None:
        """A rectifier called as a function (`F.relu`, `torch.relu`, `x.relu()`) inside a
        recorded training forward, from `parent`'s forward; named after it: `F.relu1` for
        the root's first, `layer1.0.F.relu2` for a submodule's second."""
        if not self.enabled or not detailed or not isinstance(out, torch.Tensor) or parent is None:
            return
        if isinstance(parent, RECTIFIERS):
            return  # an nn.ReLU module: its forward hook observes it
        k = self._relu_calls.get(id(parent), 0) + 1
        self._relu_calls[id(parent)] = k
        if k > MAX_FUNCTIONAL_RELUS:
            return
        prefix = self._prefix_of(parent)
        name = f"{prefix}.F.relu{k}" if prefix else f"F.relu{k}"
        if name in self._seen:
            return
        self._seen.add(name)
        p.stats(step, "train", f"act.{name}.", stats.activation_stats(out, True))
