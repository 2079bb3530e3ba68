"""Tensor statistics computed on the tensor's own device, returned unsynchronised.

Each function returns `(names, values)`: variable-name suffixes and one 1-D float tensor
holding their values, so a whole step's statistics are gathered with one transfer
(`Pending.resolve`) instead of one `.item()` per statistic. All of it runs under
`torch.no_grad()` and consumes no random numbers.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

Stats = Tuple[List[str], torch.Tensor]
MAX_CHANNELS = 16  # per-channel statistics only for image-like inputs


def shape_text(shape: Sequence[int]) -> str:
    """`3x32x32`; a scalar is `()`."""
    return "x".join(str(int(d)) for d in shape) if len(shape) else "()"


def shapes_text(tensors: Sequence[torch.Tensor]) -> str:
    """Shapes of loss inputs with a shared leading (batch) dimension written `B`: `Bx10,B`."""
    batch = {t.shape[0] for t in tensors if t.dim()}
    shared = len(batch) == 1 and all(t.dim() for t in tensors) and len(tensors) > 1
    texts = []
    for t in tensors:
        dims = [str(int(d)) for d in t.shape]
        if shared:
            dims[0] = "B"
        texts.append("x".join(dims) if dims else "()")
    return ",".join(texts)


def dtype_text(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _mean_std(x: torch.Tensor, scratch: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of all elements, in two passes (on CPU `torch.std_mean` is
    about ten times slower than a mean and a sum of squared deviations); the deviations go
    to `scratch` when given (a buffer shaped like `x`)."""
    m = x.mean()
    if x.numel() < 2:
        return m, x.new_zeros(())
    return m, (torch.sub(x, m, out=scratch).square_().sum() / (x.numel() - 1)).sqrt()


@torch.no_grad()
def input_stats(x: torch.Tensor) -> Optional[Stats]:
    """Whole-batch mean/std/min/max, fraction in [0, 1], and per-channel mean/std; None for
    integer inputs (token ids, indices: their statistics mean nothing)."""
    xf = x.detach()
    if not xf.is_floating_point():
        return None
    xf = xf.float()
    n = xf.numel()
    lo, hi = torch.aminmax(xf)
    # |x - 1/2| <= 1/2 is x in [0, 1]; one scratch buffer serves it and the deviations below
    scratch = torch.sub(xf, 0.5)
    unit = scratch.abs_().le_(0.5).sum() / n
    names = ["mean", "std", "min", "max", "unit_fraction"]
    channels = xf.shape[1] if xf.dim() >= 3 else 0
    if 1 <= channels <= MAX_CHANNELS and n // channels > 1:
        dims = [0] + list(range(2, xf.dim()))
        per = n // channels
        ch_mean = xf.mean(dim=dims)
        torch.sub(xf, ch_mean.view([1, channels] + [1] * (xf.dim() - 2)), out=scratch)
        ch_ss = scratch.square_().sum(dim=dims)  # squared deviations from each channel's mean
        ch_std = (ch_ss / (per - 1)).sqrt()
        mean = ch_mean.mean()  # every channel holds the same number of values
        std = ((ch_ss.sum() + per * (ch_mean - mean).square().sum()) / (n - 1)).sqrt()
        for c in range(channels):
            names += [f"c{c}.mean", f"c{c}.std"]
        head = torch.stack([mean, std, lo, hi, unit.float()])
        return names, torch.cat([head, torch.stack([ch_mean, ch_std], dim=1).reshape(-1)])
    mean, std = _mean_std(xf, scratch)
    return names, torch.stack([mean, std, lo, hi, unit.float()])


@torch.no_grad()
def index_stats(x: torch.Tensor) -> Optional[Stats]:
    """Mean and max of an integer or boolean input (a mask's share of ones, the largest
    segment id); None when empty."""
    if not x.numel():
        return None
    xf = x.detach()
    return ["mean", "max"], torch.stack([xf.float().mean(), xf.max().float()])


@torch.no_grad()
def relative_stats(ref: Stats, other: Stats) -> Optional[Stats]:
    """`other`'s means as shifts from `ref`'s in units of `ref`'s std (`shift`, `c{i}.shift`)
    and its stds as ratios to `ref`'s (`std_ratio`, `c{i}.std_ratio`): eval data against
    training data, independent of the data's overall scale. None if the layouts differ."""
    (rn, rv), (on, ov) = ref, other
    if rn != on:
        return None
    pos = {n: i for i, n in enumerate(rn)}
    names, num, ref_i, std_i = [], [], [], []
    for n in rn:
        base = n[: -len("mean")] if n.endswith("mean") else None
        if base is not None and base + "std" in pos:
            names.append(base + "shift")
            num.append(pos[n])
            ref_i.append(pos[n])
            std_i.append(pos[base + "std"])
    shifts = [(names[k], num[k], ref_i[k], std_i[k]) for k in range(len(names))]
    stds = [n for n in rn if n.endswith("std")]
    if not shifts and not stds:
        return None
    rv, ov = rv.double(), ov.to(rv.device).double()
    out_names: List[str] = []
    parts: List[torch.Tensor] = []
    if shifts:
        i = torch.tensor([k for _, k, _, _ in shifts], device=rv.device)
        r = torch.tensor([k for _, _, k, _ in shifts], device=rv.device)
        d = torch.tensor([k for _, _, _, k in shifts], device=rv.device)
        parts.append((ov[i] - rv[r]) / rv[d].abs().clamp_min(1e-12))
        out_names += [n for n, _, _, _ in shifts]
    if stds:
        j = torch.tensor([pos[n] for n in stds], device=rv.device)
        parts.append(ov[j] / rv[j].abs().clamp_min(1e-12))
        out_names += [n + "_ratio" for n in stds]
    return out_names, torch.cat(parts).float()


@torch.no_grad()
def label_stats(y: torch.Tensor) -> Optional[Stats]:
    """min, max and distinct count of integer class labels; None for other targets."""
    if y.is_floating_point() or y.is_complex() or y.numel() == 0 or y.dtype == torch.bool:
        return None
    yd = y.detach().reshape(-1)
    lo, hi = torch.aminmax(yd)
    # bincount over the shifted labels counts distinct classes without a sort (unique).
    distinct = torch.bincount(yd - lo).count_nonzero()
    return ["min", "max", "distinct"], torch.stack([lo.float(), hi.float(), distinct.float()])


@torch.no_grad()
def output_stats(out: torch.Tensor) -> Stats:
    """Output scale and whether rows are already probabilities (softmax applied)."""
    o = out.detach().float()
    if o.numel() == 0:
        return [], o.new_zeros(0)
    names = ["mean", "std", "absmax"]
    mean, std = _mean_std(o)
    parts = [mean, std, o.abs().max()]
    if o.dim() >= 2 and o.shape[-1] > 1:
        rows = o.reshape(-1, o.shape[-1])
        is_prob = (rows.min() >= 0) & ((rows.sum(dim=-1) - 1).abs().max() < 1e-3)
        names.append("rows_sum_to_one")
        parts.append(is_prob.float())
    return names, torch.stack(parts)


@torch.no_grad()
def class_probabilities(scores: torch.Tensor) -> Stats:
    """Whether a classification loss gets probabilities (softmax already applied) rather
    than logits: every score non-negative and each sample's scores (dim 1) summing to 1."""
    s = scores.detach().float()
    dim = 1 if s.dim() >= 2 else 0
    is_prob = (s.min() >= 0) & ((s.sum(dim=dim) - 1).abs().max() < 1e-3)
    return ["probabilities"], is_prob.float().reshape(1)


@torch.no_grad()
def activation_stats(out: torch.Tensor, rectifier: bool) -> Stats:
    """Output range; for rectifiers the max and the fraction of units (dim 1) never positive
    (their minimum is 0 by construction, so it is not computed)."""
    o = out.detach()
    if not o.is_floating_point() or o.numel() == 0:
        return [], torch.zeros(0)
    if rectifier and o.dim() >= 2:
        dims = [d for d in range(o.dim()) if d != 1]
        unit_max = o.amax(dim=dims)  # one pass over the activation
        return ["max", "dead_fraction"], torch.stack([unit_max.max(), (unit_max <= 0).float().mean()]).float()
    lo, hi = torch.aminmax(o)
    return ["min", "max"], torch.stack([lo, hi]).float()


@torch.no_grad()
def norms(tensors: List[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor, as one float tensor (on the first tensor's device)."""
    if not tensors:
        return torch.zeros(0)
    return torch.stack([n.float() for n in torch._foreach_norm(tensors)])


def broadcast_larger(a: Sequence[int], b: Sequence[int]) -> bool:
    """True when two shapes broadcast to more elements than either has ([B,1] vs [B])."""
    n = max(len(a), len(b))
    pa = [1] * (n - len(a)) + [int(d) for d in a]
    pb = [1] * (n - len(b)) + [int(d) for d in b]
    out = 1
    for x, y in zip(pa, pb):
        if x != y and 1 not in (x, y):
            return False  # not broadcastable: the loss itself raises
        out *= max(x, y)
    return out > max(math.prod(pa), math.prod(pb))
