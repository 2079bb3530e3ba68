"""Measurements of the schedule and the modes: learning rates, step time, metrics, eval
mode, dropout in evaluation."""
from __future__ import annotations

import math
import statistics
from typing import Tuple

import torch

from corpus.measures.base import Finding, measure, pct
from corpus.probe import Run


@measure("step_time_ratio")
def step_time_ratio(bug: Run, ref: Run, at_least: float) -> Finding:
    """Seconds per optimizer step (the fastest step of each run), bug over reference."""
    b, r = bug.step_seconds(), ref.step_seconds()
    return Finding("step_time_ratio", b / r >= at_least,
                   f"{1000 * b:.0f} ms per step vs {1000 * r:.0f} ms (fastest steps; x{b / r:.1f}, "
                   f"needs >= x{at_least:g})", b / r)


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


@measure("metric_at_least")
def metric_at_least(bug: Run, ref: Run, metric: str, at_least: float) -> Finding:
    """A quantity the run itself measured and reported (e.g. across ranks) reaches a bound."""
    b, r = float(bug.metrics[metric]), float(ref.metrics.get(metric, float("nan")))
    return Finding("metric_at_least", b >= at_least and not r >= at_least,
                   f"{metric} {b:.4g} (needs >= {at_least:g}; reference {r:.4g})", b, r)


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
                   f"the same eval batch gives outputs differing by {pct(b)} of their scale "
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
                   f"{pct(b)} of the model's no-grad evaluation calls ran in training mode "
                   f"(reference {pct(r)})", b, r)


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
                   f"{pct(b)} of the training forwards ran with the model in eval mode (reference {pct(r)})",
                   b, r)
