"""Measurements of the data and the loss: input sizes and scales, batches, train/eval
overlap, output width, softmaxed scores, broadcast losses, labels per batch."""
from __future__ import annotations

import hashlib
import math
import statistics
from typing import Any, List, Optional, Set, Tuple

import torch
from torch.utils.data import DataLoader, Subset

from corpus.measures.base import Finding, measure, pct, train_calls
from corpus.probe import Run


@measure("input_side_ratio")
def input_side_ratio(bug: Run, ref: Run, at_least: float) -> Finding:
    """Largest spatial side of the model's training inputs, bug over reference."""
    b = max(c.shape[-1] for c in train_calls(bug))
    r = max(c.shape[-1] for c in train_calls(ref))
    return Finding("input_side_ratio", b / r >= at_least,
                   f"model input side {b} px vs {r} px in the reference (x{b / r:.2f})", b / r)


@measure("batch_ratio")
def batch_ratio(bug: Run, ref: Run, at_most: float) -> Finding:
    """Median batch size of the model's training inputs, bug over reference."""
    b = statistics.median(c.shape[0] for c in train_calls(bug))
    r = statistics.median(c.shape[0] for c in train_calls(ref))
    return Finding("batch_ratio", b / r <= at_most, f"training batch {b:g} vs {r:g} (x{b / r:.3g})", b / r)


def _dataset(loader: Any):
    return loader.dataset if isinstance(loader, DataLoader) else loader


def _resolve(ds: Any) -> Tuple[Any, Optional[List[int]]]:
    idx: Optional[List[int]] = None
    while isinstance(ds, Subset):
        sub = [int(i) for i in ds.indices]
        idx = sub if idx is None else [sub[i] for i in idx]
        ds = ds.dataset
    return ds, idx


def _sample_hashes(ds: Any) -> Set[str]:
    out = set()
    for i in range(len(ds)):
        x = ds[i][0]
        out.add(hashlib.sha1(torch.as_tensor(x).contiguous().numpy().tobytes()).hexdigest())
    return out


def overlap_count(run: Run) -> Tuple[int, int]:
    """(test samples that are also training samples, test samples): shared indices, else content."""
    train, test = _dataset(run.result["train_loader"]), _dataset(run.result["test_loader"])
    (tb, ti), (eb, ei) = _resolve(train), _resolve(test)
    if tb is eb:
        tr = set(range(len(tb))) if ti is None else set(ti)
        te = list(range(len(eb))) if ei is None else ei
        return sum(1 for i in set(te) if i in tr), len(set(te))
    tr_h, te_h = _sample_hashes(train), _sample_hashes(test)
    return len(tr_h & te_h), len(te_h)


@measure("overlap")
def overlap(bug: Run, ref: Run) -> Finding:
    """Test samples that are also training samples (Subset indices or sample bytes)."""
    (b, n), (r, _) = overlap_count(bug), overlap_count(ref)
    return Finding("overlap", b > 0 and r == 0,
                   f"{b} of {n} test samples are training samples (reference {r})", b, r)


def _label_classes(run: Run) -> int:
    labels = [y for _, y in (run.result["test_loader"])]
    return int(torch.cat([torch.as_tensor(y).reshape(-1) for y in labels]).max()) + 1


@measure("output_width_excess")
def output_width_excess(bug: Run, ref: Run) -> Finding:
    """Model output width minus the number of classes its labels use."""
    def excess(run: Run) -> Tuple[int, int]:
        width = train_calls(run)[-1].out_shape[-1]
        return width - _label_classes(run), width
    (b, w), (r, _) = excess(bug), excess(ref)
    return Finding("output_width_excess", b > 0 and r == 0,
                   f"the model emits {w} scores for {w - b} label classes ({b} extra; reference {r})", b, r)


def _channel_shift(run: Run) -> float:
    """Largest per-channel |eval mean - train mean| of the model input, in train stds."""
    train = [c for c in train_calls(run) if c.channel_mean]
    evals = [c for c in run.model_calls() if c.is_eval and c.channel_mean]
    if not train or not evals:
        raise ValueError(f"{run.script}: no image-like train and eval inputs seen")
    shifts = []
    for ch in range(len(train[0].channel_mean)):
        tm = statistics.fmean(c.channel_mean[ch] for c in train)
        ts = statistics.fmean(c.channel_std[ch] for c in train)
        em = statistics.fmean(c.channel_mean[ch] for c in evals)
        shifts.append(abs(em - tm) / ts)
    return max(shifts)


@measure("eval_input_shift")
def eval_input_shift(bug: Run, ref: Run, at_least: float) -> Finding:
    """How far the model's eval inputs sit from its training inputs, per channel."""
    b, r = _channel_shift(bug), _channel_shift(ref)
    return Finding("eval_input_shift", b >= at_least and r < at_least / 2,
                   f"eval inputs' channel mean is {b:.2f} train stds off the training inputs' "
                   f"(reference {r:.2f})", b, r)


def _softmax_fraction(run: Run) -> float:
    calls = train_calls(run)
    return sum(c.rows_sum_to_one for c in calls) / len(calls)


@measure("softmax_outputs")
def softmax_outputs(bug: Run, ref: Run) -> Finding:
    """Training outputs that are already probabilities (rows non-negative, summing to 1)."""
    b, r = _softmax_fraction(bug), _softmax_fraction(ref)
    return Finding("softmax_outputs", b > 0.99 and r == 0.0,
                   f"{pct(b)} of training outputs are probability rows (reference {pct(r)})", b, r)


def _broadcasts(shapes: Tuple[Tuple[int, ...], ...]) -> bool:
    if len(shapes) < 2:
        return False
    out = torch.broadcast_shapes(*shapes)
    return math.prod(out) > max(math.prod(s) for s in shapes)


def _broadcast_fraction(run: Run) -> Tuple[float, str]:
    calls = run.probe.loss_shapes
    if not calls:
        raise ValueError(f"{run.script}: no loss module call seen")
    bad = [s for s in calls if _broadcasts(s)]
    example = " vs ".join("x".join(map(str, s)) for s in (bad or calls)[0])
    return len(bad) / len(calls), example


@measure("loss_broadcast")
def loss_broadcast(bug: Run, ref: Run) -> Finding:
    """Loss-module inputs that broadcast to a larger shape than either ([B,1] vs [B])."""
    (b, shapes), (r, ref_shapes) = _broadcast_fraction(bug), _broadcast_fraction(ref)
    return Finding("loss_broadcast", b > 0.99 and r == 0.0,
                   f"{pct(b)} of loss calls broadcast ({shapes}; reference {ref_shapes})", b, r)


def _labels_per_batch(run: Run) -> float:
    counts = [n for grad, n in run.probe.loss_labels if grad]
    if not counts:
        raise ValueError(f"{run.script}: no training loss call with integer labels seen")
    return statistics.fmean(counts)


@measure("labels_per_batch")
def labels_per_batch(bug: Run, ref: Run, at_most: float) -> Finding:
    """Distinct labels per training batch (at the loss module), bug over reference."""
    b, r = _labels_per_batch(bug), _labels_per_batch(ref)
    return Finding("labels_per_batch", b <= at_most * r,
                   f"{b:.2f} distinct labels per training batch vs {r:.2f} in the reference (x{b / r:.2g})", b / r)
