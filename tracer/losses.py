"""Losses, the class scores a classification loss gets, and the labels (docs/observations.md:
`loss.*`, `label.*`).

A loss is observed where it is computed, in the script or inside the root model's forward
(HF models given `labels=`, GPT-style models given targets), in the phase of the root call
it belongs to: in training, the step's first loss and its first classification loss (a
model may have several); in evaluation, every one. A training step whose loss no loss
function computed (a custom loss) takes its value from the tensor `backward()` was called
on. (A loss function's value is preferred: a script that scales the loss before backward,
for gradient accumulation or mixed precision, does not change what its loss is.)
"""
from __future__ import annotations

from typing import Any, Optional, Set

import torch

from tracer import stats
from tracer.patches import CLASSIFICATION_LOSSES
from tracer.pending import Pending, row

MIN_LABELS_SEEN = 256  # training labels seen before the largest one stands for the class count


class LossObserver:
    """Loss values and shapes, class scores and labels; the largest training label so far."""

    def __init__(self) -> None:
        # the largest training label so far, kept on the labels' device (read at a flush)
        self._label_max: Optional[torch.Tensor] = None
        self._labels_counted = 0
        self._train_seen: Set[str] = set()  # "loss", "cls": recorded in this training step
        self._call_valued = False  # a loss value was recorded since the last root call

    def next_step(self) -> None:
        self._train_seen.clear()

    def root_called(self) -> None:
        self._call_valued = False

    def on_loss(self, p: Pending, step: int, phase: str, name: str, pair: tuple, result: Any,
                train_classes: Optional[int]) -> None:
        """A loss function `name` got `pair` (input, target) and returned `result`."""
        train = phase == "train"
        first = not train or "loss" not in self._train_seen
        cls = name in CLASSIFICATION_LOSSES and (not train or "cls" not in self._train_seen)
        if not first and not cls:
            return
        inp, target = pair
        if first:
            if train:
                self._train_seen.add("loss")
            tensors = [t for t in (inp, target) if isinstance(t, torch.Tensor)]
            p.value(step, phase, "loss.input_shapes", stats.shapes_text(tensors))
            if isinstance(inp, torch.Tensor) and isinstance(target, torch.Tensor):
                p.value(step, phase, "loss.broadcast", stats.broadcast_larger(inp.shape, target.shape))
            if isinstance(result, torch.Tensor) and result.numel() > 0:
                self._value(p, step, phase, result)
        if cls and isinstance(inp, torch.Tensor) and isinstance(target, torch.Tensor):
            if train:
                self._train_seen.add("cls")
            self._classification(p, step, phase, inp, target, train_classes)

    def on_backward(self, p: Pending, step: int, phase: str, tensors: Any) -> None:
        """`backward()` was called on `tensors`: the loss value, when no loss function gave
        one for this step (training) or root call (a provisional one, in eval mode)."""
        loss = tensors if isinstance(tensors, torch.Tensor) else next(
            (t for t in tensors if isinstance(t, torch.Tensor)), None) if isinstance(tensors, (tuple, list)) else None
        if loss is None or not loss.numel() or self._call_valued or "loss" in self._train_seen:
            return
        if phase == "train":
            self._train_seen.add("loss")
        self._value(p, step, phase, loss)

    def _value(self, p: Pending, step: int, phase: str, loss: torch.Tensor) -> None:
        self._call_valued = True
        p.tensor(loss.detach().float().mean(), lambda v: [row(step, phase, "loss.value", v[0])])

    def _classification(self, p: Pending, step: int, phase: str, scores: torch.Tensor,
                        target: torch.Tensor, train_classes: Optional[int]) -> None:
        """The scores a classification loss gets (the classifier's output, whichever element
        of the model's output it is) and the labels."""
        if scores.dim() and scores.is_floating_point():
            p.value(step, phase, "loss.class_width", scores.shape[1] if scores.dim() >= 2 else scores.shape[0])
            p.stats(step, phase, "loss.", stats.class_probabilities(scores))
        st = stats.label_stats(target)
        if st is None:
            return
        p.stats(step, phase, "label.", st)
        p.value(step, phase, "label.shape", stats.shape_text(target.shape[1:]))
        if phase != "train":
            return
        n = target.numel()
        self._count(st[1][1], n)
        if self._label_max is not None and self._labels_counted >= MIN_LABELS_SEEN:
            p.tensor(self._label_max.reshape(1),
                     lambda v, step=step: [row(step, "train", "label.classes_seen", v[0] + 1)])
        k = train_classes
        if k is not None and k > 1:
            # distinct labels of the batch over what a shuffled batch would hold
            expected = k * (1 - (1 - 1 / k) ** n)
            p.tensor(st[1][2:3], lambda v, step=step: [row(step, "train", "label.mix", v[0] / expected)])

    def count_labels(self, name: str, pair: tuple, result: Any) -> None:
        """A loss of a training step nobody observes: only its labels are counted (one
        reduction on their device, no transfer), so the class count does not depend on how
        densely the run is sampled."""
        target = pair[1]
        if (name in CLASSIFICATION_LOSSES and isinstance(result, torch.Tensor) and result.requires_grad
                and isinstance(target, torch.Tensor) and not target.is_floating_point() and target.numel()):
            with torch.no_grad():
                self._count(target.detach().max().float(), target.numel())

    def _count(self, top: torch.Tensor, n: int) -> None:
        # the largest label so far stands for the class count once MIN_LABELS_SEEN were seen
        # (by then the largest class has almost surely shown up)
        self._label_max = top if self._label_max is None else torch.maximum(self._label_max, top)
        self._labels_counted += n
