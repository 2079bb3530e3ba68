"""Which model and optimizer a traced run is about.

The root model is the outermost module, called while an optimizer exists, whose parameters
an optimizer holds; the primary optimizer is the first one to step (its steps are the
run's steps). A script that trains without torch.optim (a backward, then its own updates
of the parameters) has no optimizer: its root is the outermost module called with
gradients on before the first backward that gave its parameters a gradient. A
`torch.compile` wrapper is not the root: the model it compiles is, called through it.
Everything is held weakly: the tracer keeps nothing of the user's alive.
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Optional, Set, Tuple

import torch
from torch import nn

from tracer.blocks import clean_name, compiled_original

# What runs inside a torch.compile'd model calls no hook and no wrapper of the tracer.
UNOBSERVED_WHEN_COMPILED = ("inside the torch.compile'd model: activations (act.*), dropout applied "
                            "(model.dropout_applied), module outputs, losses computed in its forward")


class RootTracker:
    """The optimizers created during the run, the primary one, the root model and its
    module names."""

    def __init__(self) -> None:
        self._optimizers: "weakref.WeakSet[torch.optim.Optimizer]" = weakref.WeakSet()
        self._primary: Optional[weakref.ref] = None
        self._root: Optional[weakref.ref] = None
        self._wrapper: Optional[weakref.ref] = None  # the torch.compile wrapper the root is called through
        self._names: Dict[int, str] = {}
        self._candidates: List[weakref.ref] = []  # outermost calls with gradients, no optimizer yet

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

    @property
    def compiled(self) -> bool:
        """Whether the root is called through a torch.compile wrapper."""
        return self._wrapper is not None and self._wrapper() is not None

    def is_root_call(self, module: nn.Module) -> bool:
        """Whether an outermost call of `module` is a call of the root model (directly or
        through its torch.compile wrapper)."""
        root = self.root
        if root is None:
            return False
        return module is root or (self._wrapper is not None and module is self._wrapper())

    def consider(self, module: nn.Module) -> None:
        """An outermost module call: it becomes the root if an optimizer holds its parameters."""
        held = self.held_param_ids()
        if held and any(id(p) in held for p in module.parameters()):
            self._adopt(module)

    def _adopt(self, module: nn.Module) -> None:
        inner = compiled_original(module)
        self._wrapper = weakref.ref(module) if inner is not None else None
        root = inner if inner is not None else module
        self._root = weakref.ref(root)
        self._names = {id(m): clean_name(n) for n, m in root.named_modules()}
        self._candidates = []

    def candidate(self, module: nn.Module) -> None:
        """An outermost call with gradients on while no optimizer exists: the root, if a
        backward follows that gives its parameters a gradient (`adopt_candidate`)."""
        if not any(r() is module for r in self._candidates) and len(self._candidates) < 8:
            self._candidates.append(weakref.ref(module))

    def adopt_candidate(self) -> None:
        """After a backward with no optimizer: the first candidate whose parameters now
        have a gradient becomes the root."""
        for ref in self._candidates:
            module = ref()
            if module is not None and any(p.grad is not None for p in module.parameters()):
                self._adopt(module)
                return
        self._candidates = []

    def name_of(self, module: nn.Module) -> Optional[str]:
        """The module's qualified name in the root; the names are read again for a module
        added since (`?Class` for one that is not the root's)."""
        name = self._names.get(id(module))
        if name is None:
            root = self.root
            if root is not None:
                self._names = {id(m): clean_name(n) for n, m in root.named_modules()}
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
