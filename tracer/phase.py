"""The train/eval phase of each root-model call, and which calls are recorded.

A call is training when the model is in training mode with gradients on (unless its batch
comes from a loader that only evaluates), evaluation when gradients are off or the model
is in eval mode. A forward with gradients on but the model in eval mode is evaluation or a
training step run in the wrong mode: it is *provisional*, its observations wait until the
next optimizer step (then it was training, recorded as `train` with `model.training` 0) or
the next root call or flush (then it was evaluation). See docs/observations.md, `phase`.

Recorded are the first training call of an observed step and the first `eval_batches`
evaluation calls of each loader pass (or step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tracer.loaders import LoaderObserver
from tracer.pending import Pending


@dataclass(frozen=True)
class RootCall:
    """What the phase machine decided about one call of the root model."""

    phase: str          # "train" or "eval"
    provisional: bool   # undecided until the next optimizer step
    out: Pending        # where this call's observations go (and the losses computed after it)
    recorded: bool      # whether the call's input, output and modules are observed


class PhaseMachine:
    """Decides each root call's phase; holds a provisional call's observations."""

    def __init__(self, pending: Pending, eval_batches: int):
        self._pending = pending  # the session's flush buffer
        self._provisional = Pending()
        self._eval_batches = eval_batches
        self.current = RootCall("train", False, pending, False)  # the last root call
        self._train_recorded = False  # a training call of this step was recorded
        self._eval_recorded = 0       # evaluation calls recorded in this pass or step

    def begin(self, root: nn.Module, loaders: LoaderObserver, observed: bool) -> RootCall:
        """A root call at a step that is `observed` (or not): its phase, and whether it is
        recorded. An undecided call before it was evaluation."""
        self.release()
        phase, provisional = self._phase_of(root, loaders)
        out = self._provisional if provisional else self._pending
        self.current = RootCall(phase, provisional, out, self._admit(phase, observed))
        return self.current

    def _phase_of(self, root: nn.Module, loaders: LoaderObserver) -> "tuple[str, bool]":
        grad = torch.is_grad_enabled()
        if root.training and grad:
            if loaders.feeding_evaluation():
                return "eval", False  # batches of a loader that never drives optimizer steps
            return "train", False
        # (The current loader may be stale, so even the train loader's role does not decide.)
        return "eval", grad and loaders.current_role() != "eval"

    def _admit(self, phase: str, observed: bool) -> bool:
        if phase == "train":
            if not observed or self._train_recorded:
                return False
            self._train_recorded = True
            return True
        if self._eval_recorded >= self._eval_batches:
            return False
        self._eval_recorded += 1
        return True

    def decide_at_step(self, observed: bool) -> None:
        """At an optimizer step: an undecided call just before it was a training step taken
        in eval mode; its observations become train-phase ones (if the step is observed and
        no other training call of it was recorded; else they are dropped)."""
        prov = self._provisional
        if prov.empty():
            return
        self._provisional = Pending()
        if observed and not self._train_recorded:
            self._train_recorded = True
            self._eval_recorded = max(0, self._eval_recorded - 1)
            self._pending.absorb(prov, phase="train")

    def release(self) -> None:
        """An undecided call's observations join the flush buffer as evaluation."""
        self._pending.absorb(self._provisional)

    def new_pass(self) -> None:
        """A loader pass begins: its first evaluation batches are recorded again."""
        self._eval_recorded = 0

    def next_step(self) -> None:
        self._train_recorded = False
        self._eval_recorded = 0
