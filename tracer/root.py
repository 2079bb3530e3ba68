"""Which model and optimizer a traced run is about.

The root model is the outermost module, called while an optimizer exists, whose parameters
an optimizer holds; the primary optimizer is the first one to step (its steps are the
run's steps). Everything is held weakly: the tracer keeps nothing of the user's alive.
"""
from __future__ import annotations

import weakref
from typing import Dict, Optional, Set, Tuple

import torch
from torch import nn


class RootTracker:
    """The optimizers created during the run, the primary one, the root model and its
    module names."""

    def __init__(self) -> None:
        self._optimizers: "weakref.WeakSet[torch.optim.Optimizer]" = weakref.WeakSet()
        self._primary: Optional[weakref.ref] = None
        self._root: Optional[weakref.ref] = None
        self._names: Dict[int, str] = {}

    def optimizer_created(self, optimizer: torch.optim.Optimizer) -> None:
        self._optimizers.add(optimizer)

    def has_optimizers(self) -> bool:
        return len(self._optimizers) > 0

    def is_primary(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether this is the run's primary optimizer (the first that steps decides)."""
        if self._primary is None:
            self._primary = weakref.ref(optimizer)
        return self._primary() is optimizer

    def held_param_ids(self) -> Set[int]:
        """ids of every parameter an optimizer holds."""
        return {id(p) for o in self._optimizers for g in o.param_groups for p in g["params"]}

    def param_groups(self) -> Dict[int, Tuple[float, float]]:
        """id of every parameter an optimizer holds -> its group's (weight decay, learning rate)."""
        return {id(p): (_number(g.get("weight_decay")), _number(g.get("lr")))
                for o in self._optimizers for g in o.param_groups for p in g["params"]}

    @property
    def root(self) -> Optional[nn.Module]:
        return self._root() if self._root is not None else None

    def consider(self, module: nn.Module) -> None:
        """An outermost module call: it becomes the root if an optimizer holds its parameters."""
        held = self.held_param_ids()
        if held and any(id(p) in held for p in module.parameters()):
            self._root = weakref.ref(module)
            self._names = {id(m): n for n, m in module.named_modules()}

    def name_of(self, module: nn.Module) -> Optional[str]:
        """The module's qualified name in the root; the names are read again for a module
        added since (`?Class` for one that is not the root's)."""
        name = self._names.get(id(module))
        if name is None:
            root = self.root
            if root is not None:
                self._names = {id(m): n for n, m in root.named_modules()}
                name = self._names.get(id(module), f"?{type(module).__name__}")
        return name

    def known_prefix(self, module: nn.Module) -> str:
        """The module's name as last read ("" for the root or a module not known yet)."""
        return self._names.get(id(module), "")


def _number(v: object) -> float:
    """A hyperparameter as a float (a 0-d tensor learning rate too; 0 when absent)."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return float(v)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0
