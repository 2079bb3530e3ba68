"""When a training step's gradients are final and when its update was applied, from what
the code does (docs/observations.md, `step`):

* `optimizer.step()`: final at its pre-hook, applied at its post-hook;
* `optimizer.step(closure)` (Lightning's automatic optimization, LBFGS): the closure runs
  the forward and backward inside the step, so the gradients are final when the closure
  first returns (it is wrapped for that, transparently), applied at the post-hook;
* no torch.optim optimizer (a loop updating `p.data` itself): final when a backward
  returns, applied by the time the script goes on: the next root-model call, the next
  backward or the end of the run.

`StepBoundaries` only finds the boundaries; what is observed at them is the session's
(`before(optimizer)`, `after(optimizer, final)`; `optimizer` is None for a step without
torch.optim; `final` is True at the end of the run, when the step budget must not raise).
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Optional, Tuple

import torch

Before = Callable[[Optional[torch.optim.Optimizer]], None]
After = Callable[[Optional[torch.optim.Optimizer], bool], None]


def step_closure(args: tuple, kwargs: Dict[str, Any]) -> Optional[Callable[..., Any]]:
    """The closure an `optimizer.step` call was given (`args[0]` is the optimizer)."""
    closure = kwargs.get("closure") if "closure" in kwargs else (args[1] if len(args) > 1 else None)
    return closure if callable(closure) else None


class StepBoundaries:
    """Calls `before` once per training step, when its gradients are final, and `after`
    once its update was applied."""

    def __init__(self, before: Before, after: After):
        self._before, self._after = before, after
        self._awaiting: Optional[weakref.ref] = None  # a closure step whose closure has not returned
        self._own_update = False  # a backward without torch.optim: its update is being applied

    # -- torch.optim ------------------------------------------------------------------
    def pre_step(self, optimizer: torch.optim.Optimizer, args: tuple,
                 kwargs: Dict[str, Any]) -> Optional[Tuple[tuple, Dict[str, Any]]]:
        """At the primary optimizer's pre-hook; returns the step's arguments with its
        closure wrapped (for the optimizer hook to pass on), or None when unchanged."""
        closure = step_closure(args, kwargs)
        if closure is None:
            self._before(optimizer)
            return None
        self._awaiting = weakref.ref(optimizer)
        wrapped = self._wrap(optimizer, closure)
        if "closure" in kwargs:
            return args, {**kwargs, "closure": wrapped}
        return (args[0], wrapped) + tuple(args[2:]), kwargs

    def _wrap(self, optimizer: torch.optim.Optimizer, closure: Callable[..., Any]) -> Callable[..., Any]:
        def closure_then_observe(*a: Any, **k: Any) -> Any:
            result = closure(*a, **k)
            self._closure_returned(optimizer)
            return result
        return closure_then_observe

    def _closure_returned(self, optimizer: torch.optim.Optimizer) -> None:
        # only the first return (LBFGS evaluates its closure several times per step)
        if self._awaiting is not None and self._awaiting() is optimizer:
            self._awaiting = None
            self._before(optimizer)

    def post_step(self, optimizer: torch.optim.Optimizer) -> None:
        """At the primary optimizer's post-hook (a closure it never called: observed late)."""
        self._closure_returned(optimizer)
        self._after(optimizer, False)

    # -- no torch.optim -----------------------------------------------------------------
    def backward_ended(self) -> None:
        """A backward returned in a run that trains without torch.optim."""
        self.script_continues()
        self._before(None)
        self._own_update = True

    def script_continues(self) -> None:
        """The script went on (a root-model call, a backward): a step without torch.optim
        whose backward came before has had its update."""
        if self._own_update:
            self._own_update = False
            self._after(None, False)

    def end(self) -> None:
        """The run ends: a step without torch.optim still open is complete."""
        if self._own_update:
            self._own_update = False
            self._after(None, True)
