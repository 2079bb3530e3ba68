"""Per-block parameter observations at `optimizer.step()`: counts, trainable and optimizer
fractions, missing gradients, gradient norms and update ratios; and the optimizer's type,
hyperparameters, learning-rate decay and `zero_grad()` calls (docs/observations.md,
`block.*` and `optim.*`)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from tracer import stats
from tracer.blocks import BlockMap, block_map, numel
from tracer.pending import Pending, Row, row

Layout = List[Tuple[str, List[Tuple[int, Optional[int]]]]]  # block prefix -> (numel, grad index)


class ParameterObserver:
    """Keeps the block map (until the parameter set changes) and the parameter copy that
    an update ratio needs between the step's pre- and post-hook."""

    def __init__(self, depth: int):
        self.depth = depth
        self._cache: Optional[Tuple[tuple, BlockMap]] = None
        self._snapshot: Optional[Tuple[List[torch.Tensor], List[torch.Tensor], List[str]]] = None

    def blocks(self, root: nn.Module) -> BlockMap:
        # Recomputed only when the parameter set changes (a head replaced mid-run).
        key = tuple(id(q) for q in root.parameters())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, block_map(root, self.depth))
        return self._cache[1]

    def before_step(self, p: Pending, step: int, root: nn.Module,
                    held: Optional[Mapping[int, Tuple[float, float]]], snapshot: bool) -> None:
        """Block structure, optimizer settings per block and gradients; `held` maps every
        parameter an optimizer holds to its group's (weight decay, learning rate), None when
        the script updates the parameters itself (no torch.optim: no optimizer settings, and
        every parameter with a gradient is updated). With `snapshot`, copies the parameters
        about to be updated (update ratio)."""
        bm = self.blocks(root)
        grads: List[torch.Tensor] = []
        layout: Layout = []
        lr_max = max((lr for _, lr in held.values()), default=0.0) if held is not None else 0.0
        for block in bm.names:
            params = bm.params[block]
            trainable = [(n, q) for n, q in params if q.requires_grad]
            total, n_train = numel(params), numel(trainable)
            prefix = f"block.{block}."
            p.value(step, "train", prefix + "params", total)
            p.value(step, "train", prefix + "trainable_fraction", n_train / total if total else 0.0)
            if held is not None and n_train < total:  # frozen parameters handed to an optimizer
                frozen_held = sum(q.numel() for _, q in params if not q.requires_grad and id(q) in held)
                p.value(step, "train", prefix + "frozen_in_optimizer_fraction", frozen_held / (total - n_train))
            if not n_train:
                continue
            if held is not None:
                _optimizer_settings(p, step, prefix, trainable, n_train, held, lr_max)
            entries = []
            for _, q in trainable:
                if q.grad is None:
                    entries.append((q.numel(), None))
                else:
                    entries.append((q.numel(), len(grads)))
                    grads.append(q.grad.detach())
            layout.append((prefix, entries))
        if grads:
            p.tensor(stats.norms(grads), lambda v: _grad_rows(step, layout, v))
        else:
            p.rows.extend(_grad_rows(step, layout, []))
        snap = [(block, q) for block in bm.names for _, q in bm.params[block]
                if q.requires_grad and q.grad is not None and (held is None or id(q) in held)]
        if snap and snapshot:
            with torch.no_grad():
                self._snapshot = ([q.detach().clone() for _, q in snap], [q for _, q in snap],
                                  [b for b, _ in snap])

    def has_snapshot(self) -> bool:
        return self._snapshot is not None

    def after_step(self, p: Pending, step: int) -> None:
        """‖Δw‖/‖w‖ per block, from the copy taken before the step (if any)."""
        if self._snapshot is None:
            return
        before, params, keys = self._snapshot
        self._snapshot = None
        with torch.no_grad():
            delta = torch._foreach_sub([q.detach() for q in params], before)
            dn = stats.norms(delta)
            wn = stats.norms(before)

        def build(v: List[float]) -> List[Row]:
            n = len(keys)
            d2: Dict[str, float] = {}
            w2: Dict[str, float] = {}
            for k, dv, wv in zip(keys, v[:n], v[n:]):
                d2[k] = d2.get(k, 0.0) + dv * dv
                w2[k] = w2.get(k, 0.0) + wv * wv
            return [row(step, "train", f"block.{k}.update_ratio",
                        (d2[k] ** 0.5) / (w2[k] ** 0.5) if w2[k] > 0 else 0.0) for k in d2]

        p.tensor(torch.cat([dn, wn.to(dn.device)]), build)


class OptimizerObserver:
    """The primary optimizer at its observed steps; counts `zero_grad()` calls between steps."""

    def __init__(self) -> None:
        self._lr_peak = 0.0
        self._zero_grad_calls = 0

    def zero_grad_called(self) -> None:
        self._zero_grad_calls += 1

    def take_zero_grads(self) -> int:
        """The `zero_grad()` calls since the previous step's gradients were final (a
        closure's own for its step), and a new count begins."""
        n, self._zero_grad_calls = self._zero_grad_calls, 0
        return n

    @staticmethod
    def record_zero_grads(p: Pending, step: int, calls: int) -> None:
        # From step 1: zero_grad() may come before or after the forward, not at step 0.
        if step > 0:
            p.value(step, "train", "optim.zero_grad_calls", calls)

    def before_step(self, p: Pending, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Type and hyperparameters; the learning rate as a fraction of its peak so far."""
        lr = optimizer_stats(p, step, optimizer)
        if lr is not None and lr > 0:
            # Decay from the peak so far: a warm-up never lowers it, a collapse does.
            self._lr_peak = max(self._lr_peak, lr)
            p.value(step, "train", "optim.lr_fraction_of_peak", lr / self._lr_peak)

    def next_step(self) -> None:
        """Nothing: the zero_grad count restarts when it is taken (`take_zero_grads`)."""


def optimizer_stats(p: Pending, step: int, optimizer: torch.optim.Optimizer) -> Optional[float]:
    """Optimizer type, group count and every numeric hyperparameter per group; returns the
    largest learning rate (None if no group has a numeric one)."""
    p.value(step, "train", "optim.type", type(optimizer).__name__)
    p.value(step, "train", "optim.groups", len(optimizer.param_groups))
    lrs = []
    for i, g in enumerate(optimizer.param_groups):
        for key, val in g.items():
            if key == "params":
                continue
            if isinstance(val, torch.Tensor) and val.numel() == 1:
                val = float(val)
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                p.value(step, "train", f"optim.g{i}.{key}", val)
            elif isinstance(val, (tuple, list)) and val and all(isinstance(x, (int, float)) for x in val):
                for j, x in enumerate(val):
                    p.value(step, "train", f"optim.g{i}.{key}{j}", x)
        lr = g.get("lr")
        if isinstance(lr, torch.Tensor):
            lr = float(lr)
        if isinstance(lr, (int, float)):
            lrs.append(float(lr))
    if lrs:
        p.value(step, "train", "optim.lr_max", max(lrs))
    return max(lrs) if lrs else None


def _optimizer_settings(p: Pending, step: int, prefix: str, trainable: List[Tuple[str, nn.Parameter]],
                        n_train: int, held: Mapping[int, Tuple[float, float]], lr_max: float) -> None:
    """Which share of a block's trainable parameters an optimizer holds; of those, which
    share is weight-decayed and their learning rate against the optimizer's largest."""
    in_optimizer = [(q.numel(), held[id(q)]) for _, q in trainable if id(q) in held]
    n_held = sum(n for n, _ in in_optimizer)
    p.value(step, "train", prefix + "in_optimizer_fraction", n_held / n_train)
    if n_held:
        decayed = sum(n for n, (wd, _) in in_optimizer if wd > 0)
        p.value(step, "train", prefix + "decay_fraction", decayed / n_held)
        if lr_max > 0:
            rate = sum(n * lr for n, (_, lr) in in_optimizer) / n_held
            p.value(step, "train", prefix + "lr_scale", rate / lr_max)


def _grad_rows(step: int, layout: Layout, norms: List[float]) -> List[Row]:
    rows: List[Row] = []
    for prefix, entries in layout:
        total = sum(n for n, _ in entries)
        missing = sum(n for n, i in entries if i is None or norms[i] == 0.0)
        sq = sum(norms[i] ** 2 for _, i in entries if i is not None)
        rows.append(row(step, "train", prefix + "no_grad_fraction", missing / total if total else 0.0))
        rows.append(row(step, "train", prefix + "grad_norm", sq ** 0.5))
    return rows


class ClipObserver:
    """Gradient clipping (`clip_grad_norm_`) at observed steps: the max_norm asked for and
    the factor the gradients were scaled by (1: untouched); the step's first call only."""

    def __init__(self) -> None:
        self._seen_step: Optional[int] = None

    def on_clip(self, p: Pending, step: int, max_norm: Any, total_norm: Any) -> None:
        if self._seen_step == step or not isinstance(total_norm, torch.Tensor):
            return
        if isinstance(max_norm, torch.Tensor) and max_norm.numel() == 1:
            max_norm = float(max_norm)
        if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool):
            return
        self._seen_step = step
        p.value(step, "train", "clip.max_norm", float(max_norm))
        scale = (float(max_norm) / (total_norm.detach().float() + 1e-6)).clamp(max=1.0)
        p.tensor(scale, lambda v: [row(step, "train", "clip.scale", v[0])])
