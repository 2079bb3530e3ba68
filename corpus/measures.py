"""Symptom measurements: what a bug variant's run shows, against its case's reference run.

Each measurement is a function `(bug: Run, ref: Run, **args) -> Finding` registered under
the name a variant's `measure:` list in case.yaml uses. Values are computed from the runs
(parameters, gradients, probe records, loaders), never read from metadata; most also
measure the reference, which must not show the symptom.
"""
from __future__ import annotations

import hashlib
import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import torch
from torch.utils.data import DataLoader, Subset

from corpus.probe import Run


@dataclass(frozen=True)
class Finding:
    check: str
    passed: bool
    text: str           # the measured values in words
    value: float = float("nan")
    reference: float = float("nan")


Measure = Callable[..., Finding]
MEASURES: Dict[str, Measure] = {}


def measure(name: str) -> Callable[[Measure], Measure]:
    """Registers a measurement under `name` (refusing duplicates)."""
    def register(fn: Measure) -> Measure:
        if name in MEASURES:
            raise ValueError(f"measurement {name!r} registered twice")
        MEASURES[name] = fn
        return fn
    return register


def run_measure(spec: Dict[str, Any], bug: Run, ref: Run) -> Finding:
    """Runs one `{check: NAME, ...args}` entry; an unknown name or a crash is a failed finding."""
    args = {k: v for k, v in spec.items() if k != "check"}
    name = spec.get("check")
    fn = MEASURES.get(name)
    if fn is None:
        return Finding(str(name), False, f"unknown measurement (known: {', '.join(sorted(MEASURES))})")
    try:
        return fn(bug, ref, **args)
    except Exception as e:  # noqa: BLE001 - a measurement that cannot be taken fails
        return Finding(name, False, f"could not measure: {type(e).__name__}: {e}")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _matching(run: Run, pattern: str) -> List[Tuple[str, torch.nn.Parameter]]:
    rx = re.compile(pattern)
    params = [(n, p) for n, p in run.model.named_parameters() if rx.search(n)]
    if not params:
        raise ValueError(f"no parameter of {run.script}'s model matches {pattern!r}")
    return params


def _weighted(items: Iterable[Tuple[torch.Tensor, bool]]) -> float:
    """Fraction of elements whose flag is set."""
    items = list(items)
    total = sum(t.numel() for t, _ in items)
    return sum(t.numel() for t, flag in items if flag) / total if total else float("nan")


def _unchanged_fraction(run: Run, pattern: str) -> float:
    snap = run.probe.snapshots.get(id(run.model), {})
    return _weighted((p, n in snap and torch.equal(p.detach(), snap[n])) for n, p in _matching(run, pattern))


@measure("unchanged")
def unchanged(bug: Run, ref: Run, params: str = ".*") -> Finding:
    """Parameters bitwise equal after training to their values at the first forward."""
    b, r = _unchanged_fraction(bug, params), _unchanged_fraction(ref, params)
    steps = len(bug.probe.steps)
    return Finding("unchanged", b == 1.0 and r < 0.5,
                   f"{_pct(b)} of parameters /{params}/ unchanged after {steps} steps "
                   f"(reference {_pct(r)})", b, r)


def _in_optimizer_fraction(run: Run, pattern: str) -> float:
    held = {id(p) for o in run.probe.optimizers for g in o.param_groups for p in g["params"]}
    return _weighted((p, id(p) in held) for _, p in _matching(run, pattern))


@measure("not_in_optimizer")
def not_in_optimizer(bug: Run, ref: Run, params: str = ".*") -> Finding:
    """Trainable parameters that no stepped optimizer holds."""
    b, r = _in_optimizer_fraction(bug, params), _in_optimizer_fraction(ref, params)
    trainable = _weighted((p, p.requires_grad) for _, p in _matching(bug, params))
    return Finding("not_in_optimizer", b == 0.0 and r > 0.5,
                   f"{_pct(b)} of /{params}/ held by the optimizer, {_pct(trainable)} trainable "
                   f"(reference {_pct(r)} held)", b, r)


@measure("buffers_drift")
def buffers_drift(bug: Run, ref: Run, buffers: str = "running_") -> Finding:
    """Buffers (BatchNorm running statistics) that changed during the run: the mask."""
    snap = bug.probe.snapshots.get(id(bug.model), {})
    rx = re.compile(buffers)
    items = [(b, n in snap and not torch.equal(b, snap[n]))
             for n, b in bug.model.named_buffers() if rx.search(n) and b.is_floating_point()]
    frac = _weighted(items)
    return Finding("buffers_drift", frac > 0,
                   f"{_pct(frac)} of /{buffers}/ buffers still change, so the model's outputs "
                   f"drift although no weight moves", frac)


def _never_grad_fraction(run: Run, pattern: str) -> float:
    return _weighted((p, id(p) not in run.probe.grad_seen) for _, p in _matching(run, pattern))


@measure("no_grad")
def no_grad(bug: Run, ref: Run, params: str) -> Finding:
    """Trainable parameters whose .grad stayed None or zero at every optimizer step."""
    b, r = _never_grad_fraction(bug, params), _never_grad_fraction(ref, params)
    none_now = sum(1 for _, p in _matching(bug, params) if p.grad is None)
    total = len(_matching(bug, params))
    return Finding("no_grad", b == 1.0 and r == 0.0,
                   f"{_pct(b)} of /{params}/ never had a gradient at any step ({none_now}/{total} "
                   f"tensors' .grad is None at the end; reference {_pct(r)})", b, r)


def _train_calls(run: Run):
    return [c for c in run.model_calls() if not c.is_eval]


@measure("input_side_ratio")
def input_side_ratio(bug: Run, ref: Run, at_least: float) -> Finding:
    """Largest spatial side of the model's training inputs, bug over reference."""
    b = max(c.shape[-1] for c in _train_calls(bug))
    r = max(c.shape[-1] for c in _train_calls(ref))
    return Finding("input_side_ratio", b / r >= at_least,
                   f"model input side {b} px vs {r} px in the reference (x{b / r:.2f})", b / r)


@measure("step_time_ratio")
def step_time_ratio(bug: Run, ref: Run, at_least: float) -> Finding:
    """Seconds per optimizer step (the fastest step of each run), bug over reference."""
    b, r = bug.step_seconds(), ref.step_seconds()
    return Finding("step_time_ratio", b / r >= at_least,
                   f"{1000 * b:.0f} ms per step vs {1000 * r:.0f} ms (fastest steps; x{b / r:.1f}, "
                   f"needs >= x{at_least:g})", b / r)


@measure("batch_ratio")
def batch_ratio(bug: Run, ref: Run, at_most: float) -> Finding:
    """Median batch size of the model's training inputs, bug over reference."""
    b = statistics.median(c.shape[0] for c in _train_calls(bug))
    r = statistics.median(c.shape[0] for c in _train_calls(ref))
    return Finding("batch_ratio", b / r <= at_most, f"training batch {b:g} vs {r:g} (x{b / r:.3g})", b / r)


@measure("lr_ratio")
def lr_ratio(bug: Run, ref: Run, at_least: float) -> Finding:
    """Largest learning rate the optimizer stepped with, bug over reference."""
    b = max(s.lr_max for s in bug.probe.steps)
    r = max(s.lr_max for s in ref.probe.steps)
    return Finding("lr_ratio", b / r >= at_least, f"peak learning rate {b:g} vs {r:g} (x{b / r:.2g})", b / r)


@measure("metric_ratio")
def metric_ratio(bug: Run, ref: Run, metric: str, at_most: float = math.inf, at_least: float = 0.0) -> Finding:
    """A final metric of the bug run over the reference's (the visible cost of the bug): at
    most `at_most` times it (an accuracy), or at least `at_least` times it (a loss)."""
    b, r = float(bug.metrics[metric]), float(ref.metrics[metric])
    return Finding("metric_ratio", at_least * r <= b <= at_most * r, f"{metric} {b:.3f} vs {r:.3f} in the reference",
                   b / r, r)


@measure("update_persistence")
def update_persistence(bug: Run, ref: Run, at_least: float) -> Finding:
    """Median cosine between consecutive updates (a script's own update loop,
    probe.grad_cosines): gradients never cleared make each update mostly the sum of the ones
    before, so consecutive updates point the same way even when clipping hides their size."""
    b, r = statistics.median(bug.probe.grad_cosines[5:]), statistics.median(ref.probe.grad_cosines[5:])
    return Finding("update_persistence", b >= at_least and r < at_least,
                   f"consecutive updates' cosine {b:.2f} (reference {r:.2f})", b, r)


def _final_grad_norm(run: Run) -> float:
    grads = [p.grad.detach().float() for p in run.model.parameters() if p.grad is not None]
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) if grads else 0.0


@measure("final_grad_norm_ratio")
def final_grad_norm_ratio(bug: Run, ref: Run, at_least: float) -> Finding:
    """The gradient left in the returned model after the run (the last update's), bug over
    reference: gradients never cleared hold the sum of every batch's (steps taken by the
    script's own loop or inside a framework, which optimizer hooks do not show)."""
    b, r = _final_grad_norm(bug), _final_grad_norm(ref)
    ratio = b / r if r > 0 else math.inf
    return Finding("final_grad_norm_ratio", ratio >= at_least,
                   f"gradient norm left after the run {b:.3g} vs {r:.3g} in the reference (x{ratio:.2g})", ratio)


@measure("metric_at_least")
def metric_at_least(bug: Run, ref: Run, metric: str, at_least: float) -> Finding:
    """A quantity the run itself measured and reported (e.g. across ranks) reaches a bound."""
    b, r = float(bug.metrics[metric]), float(ref.metrics.get(metric, float("nan")))
    return Finding("metric_at_least", b >= at_least and not r >= at_least,
                   f"{metric} {b:.4g} (needs >= {at_least:g}; reference {r:.4g})", b, r)


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
        width = _train_calls(run)[-1].out_shape[-1]
        return width - _label_classes(run), width
    (b, w), (r, _) = excess(bug), excess(ref)
    return Finding("output_width_excess", b > 0 and r == 0,
                   f"the model emits {w} scores for {w - b} label classes ({b} extra; reference {r})", b, r)


def _channel_shift(run: Run) -> float:
    """Largest per-channel |eval mean - train mean| of the model input, in train stds."""
    train = [c for c in _train_calls(run) if c.channel_mean]
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


def _dead_fraction(run: Run, last_steps: int = 5) -> Tuple[float, str]:
    names = {id(m): n for n, m in run.model.named_modules()}
    worst, where = 0.0, "-"
    for mid, seen in run.probe.dead.items():
        if mid not in names:
            continue
        final = max(s for s, _ in seen)
        recent = [f for s, f in seen if s > final - last_steps]
        frac = statistics.fmean(recent)
        if frac > worst:
            worst, where = frac, names[mid]
    return worst, where


@measure("dead_units")
def dead_units(bug: Run, ref: Run, at_least: float) -> Finding:
    """Largest fraction of a ReLU's units that are never positive over a training batch."""
    (b, where), (r, _) = _dead_fraction(bug), _dead_fraction(ref)
    return Finding("dead_units", b >= at_least and r < at_least / 2,
                   f"{_pct(b)} of the units of {where} never fire over a batch in the last steps "
                   f"(reference worst {_pct(r)})", b, r)


def _growth(run: Run) -> float:
    norms = [s.grad_norm for s in run.probe.steps if not math.isnan(s.grad_norm)]
    if len(norms) < 25:
        raise ValueError(f"{run.script}: {len(norms)} steps, need 25")
    return statistics.median(norms[15:25]) / norms[0]


@measure("grad_norm_growth")
def grad_norm_growth(bug: Run, ref: Run, at_least: float) -> Finding:
    """Median gradient norm at steps 16-25 over the first step's (a fresh gradient in any
    run): stale gradients pile up."""
    b, r = _growth(bug), _growth(ref)
    return Finding("grad_norm_growth", b >= at_least and r < at_least,
                   f"gradient norm at steps 16-25 is x{b:.1f} the first step's (reference x{r:.1f})", b, r)


def _first_eval_scale(run: Run) -> Tuple[float, int]:
    call = next(c for c in run.model_calls() if c.is_eval)
    return call.out_std, call.step


@measure("first_eval_output_scale")
def first_eval_output_scale(bug: Run, ref: Run, at_least: float) -> Finding:
    """Output scale of the first evaluation, bug over reference (either direction)."""
    (b, bstep), (r, rstep) = _first_eval_scale(bug), _first_eval_scale(ref)
    ratio = max(b / r, r / b) if b > 0 and r > 0 else float("inf")
    return Finding("first_eval_output_scale", ratio >= at_least,
                   f"first evaluation (after {bstep} steps) has output std {b:.3g} vs {r:.3g} "
                   f"in the reference's (after {rstep} steps): x{ratio:.3g}", ratio)


def _eval_spread(run: Run) -> float:
    """Max |difference| of two replays of the first eval batch, in the modes it ran with."""
    x, modes = run.probe.first_eval[id(run.model)]
    model = run.model
    saved = {n: m.training for n, m in model.named_modules()}
    try:
        for n, m in model.named_modules():
            m.training = modes.get(n, m.training)
        with torch.no_grad():
            a, b = model(x), model(x)
    finally:
        for n, m in model.named_modules():
            m.training = saved[n]
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


@measure("eval_nondeterminism")
def eval_nondeterminism(bug: Run, ref: Run) -> Finding:
    """Two evaluations of the same batch in the mode the script evaluated in must agree."""
    b, r = _eval_spread(bug), _eval_spread(ref)
    return Finding("eval_nondeterminism", b > 1e-3 and r < 1e-6,
                   f"the same eval batch gives outputs differing by {_pct(b)} of their scale "
                   f"(reference {r:.1g})", b, r)


def _train_mode_eval_fraction(run: Run) -> float:
    evals = [c for c in run.model_calls() if not c.grad_enabled]
    if not evals:
        raise ValueError(f"{run.script}: no evaluation call under torch.no_grad() seen")
    return sum(c.training for c in evals) / len(evals)


@measure("eval_in_train_mode")
def eval_in_train_mode(bug: Run, ref: Run) -> Finding:
    """Evaluation calls (under no_grad) made while the model was in training mode."""
    b, r = _train_mode_eval_fraction(bug), _train_mode_eval_fraction(ref)
    return Finding("eval_in_train_mode", b > 0.99 and r == 0.0,
                   f"{_pct(b)} of the model's no-grad evaluation calls ran in training mode "
                   f"(reference {_pct(r)})", b, r)


def _softmax_fraction(run: Run) -> float:
    calls = _train_calls(run)
    return sum(c.rows_sum_to_one for c in calls) / len(calls)


@measure("softmax_outputs")
def softmax_outputs(bug: Run, ref: Run) -> Finding:
    """Training outputs that are already probabilities (rows non-negative, summing to 1)."""
    b, r = _softmax_fraction(bug), _softmax_fraction(ref)
    return Finding("softmax_outputs", b > 0.99 and r == 0.0,
                   f"{_pct(b)} of training outputs are probability rows (reference {_pct(r)})", b, r)


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
                   f"{_pct(b)} of loss calls broadcast ({shapes}; reference {ref_shapes})", b, r)


def _eval_mode_training_fraction(run: Run) -> float:
    grad = [c for c in run.model_calls() if c.grad_enabled]
    if not grad:
        raise ValueError(f"{run.script}: no model call with gradients enabled seen")
    return sum(not c.training for c in grad) / len(grad)


@measure("trains_in_eval_mode")
def trains_in_eval_mode(bug: Run, ref: Run, at_least: float) -> Finding:
    """Model calls with gradients enabled (training forwards) made in eval mode."""
    b, r = _eval_mode_training_fraction(bug), _eval_mode_training_fraction(ref)
    return Finding("trains_in_eval_mode", b >= at_least and r == 0.0,
                   f"{_pct(b)} of the training forwards ran with the model in eval mode (reference {_pct(r)})",
                   b, r)


@measure("final_lr_ratio")
def final_lr_ratio(bug: Run, ref: Run, at_most: float = math.inf, at_least: float = 0.0) -> Finding:
    """Learning rate of the last optimizer step, bug over reference."""
    b, r = bug.probe.steps[-1].lr_max, ref.probe.steps[-1].lr_max
    return Finding("final_lr_ratio", at_least * r <= b <= at_most * r,
                   f"last learning rate {b:.3g} vs {r:.3g} in the reference (x{b / r:.2g})", b / r)


@measure("mean_lr_ratio")
def mean_lr_ratio(bug: Run, ref: Run, at_most: float, steps: int = 30) -> Finding:
    """Mean learning rate over the first `steps` optimizer steps, bug over reference."""
    b = statistics.fmean(s.lr_max for s in bug.probe.steps[:steps])
    r = statistics.fmean(s.lr_max for s in ref.probe.steps[:steps])
    return Finding("mean_lr_ratio", b <= at_most * r,
                   f"mean learning rate over the first {steps} steps {b:.3g} vs {r:.3g} in the reference "
                   f"(x{b / r:.2g})", b / r)


@measure("grad_norm_ratio")
def grad_norm_ratio(bug: Run, ref: Run, at_most: float) -> Finding:
    """Median gradient norm the optimizer stepped with (after any clipping), bug over reference."""
    b = statistics.median(s.grad_norm for s in bug.probe.steps)
    r = statistics.median(s.grad_norm for s in ref.probe.steps)
    return Finding("grad_norm_ratio", b <= at_most * r,
                   f"median gradient norm at the optimizer {b:.3g} vs {r:.3g} in the reference (x{b / r:.2g})",
                   b / r)


def _decayed_fraction(run: Run, pattern: str) -> float:
    decayed = {id(p) for o in run.probe.optimizers for g in o.param_groups if g.get("weight_decay", 0) > 0
               for p in g["params"]}
    return _weighted((p, id(p) in decayed) for _, p in _matching(run, pattern))


@measure("decayed")
def decayed(bug: Run, ref: Run, params: str, at_least: float) -> Finding:
    """Fraction of the parameters matching `params` that an optimizer group with weight decay holds."""
    b, r = _decayed_fraction(bug, params), _decayed_fraction(ref, params)
    return Finding("decayed", b >= at_least and r < at_least,
                   f"{_pct(b)} of /{params}/ weight-decayed (reference {_pct(r)})", b, r)


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
