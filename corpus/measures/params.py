"""Measurements of parameters and the optimizer: what changed, what got a gradient, what
the optimizer holds and decays, gradient norms, dead units."""
from __future__ import annotations

import math
import re
import statistics
from typing import Tuple

import torch

from corpus.measures.base import Finding, matching, measure, pct, weighted
from corpus.probe import Run


def _unchanged_fraction(run: Run, pattern: str) -> float:
    snap = run.probe.snapshots.get(id(run.model), {})
    return weighted((p, n in snap and torch.equal(p.detach(), snap[n])) for n, p in matching(run, pattern))


@measure("unchanged")
def unchanged(bug: Run, ref: Run, params: str = ".*") -> Finding:
    """Parameters bitwise equal after training to their values at the first forward."""
    b, r = _unchanged_fraction(bug, params), _unchanged_fraction(ref, params)
    steps = len(bug.probe.steps)
    return Finding("unchanged", b == 1.0 and r < 0.5,
                   f"{pct(b)} of parameters /{params}/ unchanged after {steps} steps "
                   f"(reference {pct(r)})", b, r)


def _in_optimizer_fraction(run: Run, pattern: str) -> float:
    held = {id(p) for o in run.probe.optimizers for g in o.param_groups for p in g["params"]}
    return weighted((p, id(p) in held) for _, p in matching(run, pattern))


@measure("not_in_optimizer")
def not_in_optimizer(bug: Run, ref: Run, params: str = ".*") -> Finding:
    """Trainable parameters that no stepped optimizer holds."""
    b, r = _in_optimizer_fraction(bug, params), _in_optimizer_fraction(ref, params)
    trainable = weighted((p, p.requires_grad) for _, p in matching(bug, params))
    return Finding("not_in_optimizer", b == 0.0 and r > 0.5,
                   f"{pct(b)} of /{params}/ held by the optimizer, {pct(trainable)} trainable "
                   f"(reference {pct(r)} held)", b, r)


@measure("buffers_drift")
def buffers_drift(bug: Run, ref: Run, buffers: str = "running_") -> Finding:
    """Buffers (BatchNorm running statistics) that changed during the run: the mask."""
    snap = bug.probe.snapshots.get(id(bug.model), {})
    rx = re.compile(buffers)
    items = [(b, n in snap and not torch.equal(b, snap[n]))
             for n, b in bug.model.named_buffers() if rx.search(n) and b.is_floating_point()]
    frac = weighted(items)
    return Finding("buffers_drift", frac > 0,
                   f"{pct(frac)} of /{buffers}/ buffers still change, so the model's outputs "
                   f"drift although no weight moves", frac)


def _never_grad_fraction(run: Run, pattern: str) -> float:
    return weighted((p, id(p) not in run.probe.grad_seen) for _, p in matching(run, pattern))


@measure("no_grad")
def no_grad(bug: Run, ref: Run, params: str) -> Finding:
    """Trainable parameters whose .grad stayed None or zero at every optimizer step."""
    b, r = _never_grad_fraction(bug, params), _never_grad_fraction(ref, params)
    none_now = sum(1 for _, p in matching(bug, params) if p.grad is None)
    total = len(matching(bug, params))
    return Finding("no_grad", b == 1.0 and r == 0.0,
                   f"{pct(b)} of /{params}/ never had a gradient at any step ({none_now}/{total} "
                   f"tensors' .grad is None at the end; reference {pct(r)})", b, r)


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
                   f"{pct(b)} of the units of {where} never fire over a batch in the last steps "
                   f"(reference worst {pct(r)})", b, r)


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
    return weighted((p, id(p) in decayed) for _, p in matching(run, pattern))


@measure("decayed")
def decayed(bug: Run, ref: Run, params: str, at_least: float) -> Finding:
    """Fraction of the parameters matching `params` that an optimizer group with weight decay holds."""
    b, r = _decayed_fraction(bug, params), _decayed_fraction(ref, params)
    return Finding("decayed", b >= at_least and r < at_least,
                   f"{pct(b)} of /{params}/ weight-decayed (reference {pct(r)})", b, r)
