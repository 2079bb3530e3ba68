"""Group violations into root causes with a small causal graph over cause families.

An edge `a -> b` says "a violation of family a explains violations of family b": a frozen
block explains missing updates and a flat loss. Root causes are the violated families no
other violated family explains; each root collects the violations it explains.

Severity by consequence: a root whose own violations are warnings (a configuration drift,
such as a learning-rate schedule) but which explains an error-level violation (a consequence
envelope: the loss does not progress, updates collapse) becomes an error itself: its
violations are escalated, naming the consequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import networkx as nx

from invariants.check import Violation
from invariants.model import SEVERITY_RANK

CAUSAL_EDGES = {
    "frozen": ("no_gradient", "not_in_optimizer", "gradients", "updates", "loss_trend", "output_scale"),
    "not_in_optimizer": ("updates", "loss_trend", "gradients", "output_scale"),
    "no_gradient": ("gradients", "updates", "loss_trend", "output_scale"),
    "input_size": ("cost", "input_scale", "eval_input_mismatch", "output_scale", "gradients", "updates", "dead_units", "loss_trend"),
    # rescaled training data explains eval data that differ from the reference's too
    "input_scale": ("output_scale", "gradients", "updates", "dead_units", "loss_trend", "eval_input_mismatch"),
    "batch_size": ("cost", "gradients", "updates", "loss_trend", "input_scale"),
    "learning_rate": ("updates", "gradients", "dead_units", "loss_trend", "output_scale", "lr_multiplier"),
    "stale_gradients": ("gradients", "updates", "loss_trend", "output_scale", "dead_units"),
    "eval_mode": ("output_scale",),
    "eval_input_mismatch": ("output_scale",),
    "output_width": ("architecture", "loss_broadcast", "output_scale", "loss_trend", "gradients", "updates"),
    "architecture": ("gradients", "updates", "cost"),
    # units that never fire pass no gradient to the weights before them
    "dead_units": ("no_gradient", "gradients", "updates", "loss_trend", "output_scale"),
    "loss_broadcast": ("gradients", "updates", "loss_trend", "output_scale"),
    "labels": ("output_width",),
    # an eval set drawn from the training data takes on the training data's statistics
    "leakage": ("eval_input_mismatch",),
    # distributed runs: a rank-specific setting or unsynchronised gradients make replicas drift
    "rank_config_mismatch": ("replica_divergence", "unsynced_gradients", "learning_rate", "batch_size",
                             "gradients", "updates"),
    "unsynced_gradients": ("replica_divergence", "gradients", "updates", "loss_trend"),
    "replica_divergence": ("gradients", "updates", "loss_trend", "output_scale"),
    "duplicate_shards": ("loss_trend",),
    # batches of one class each: the gradients swing from class to class, and the classes
    # seen so far understate the class count the output width is compared with
    "data_order": ("loss_trend", "gradients", "updates", "output_scale", "output_width"),
    # optimizer settings: what they change in the run's dynamics
    "optimizer": ("updates", "gradients", "loss_trend", "output_scale"),
    "weight_decay": ("optimizer", "updates", "gradients", "output_scale"),
    "lr_multiplier": ("updates", "gradients", "loss_trend", "output_scale", "dead_units"),
    "gradient_clipping": ("gradients", "updates", "loss_trend", "output_scale"),
    # a NaN or infinity anywhere spreads to everything computed from it
    "non_finite": ("gradients", "updates", "loss_trend", "output_scale", "dead_units"),
    # what the model outputs decides its gradients (probabilities instead of logits: none)
    "output_scale": ("gradients", "updates", "loss_trend"),
    # the dynamics themselves, in the order they follow from each other
    "gradients": ("updates", "loss_trend"),
    "updates": ("loss_trend",),
}

HINTS = {
    "frozen": "parameters were frozen (requires_grad=False): unfreeze them, or re-infer if freezing is intended",
    "not_in_optimizer": "trainable parameters are not held by the optimizer: build the optimizer after the "
                        "model is final and pass model.parameters()",
    "no_gradient": "trainable parameters receive no gradient: look for .detach(), torch.no_grad() or an "
                   "unused branch in forward",
    "input_size": "the input size differs from the reference: check Resize/crop transforms against the "
                  "size the model was built for",
    "input_scale": "input statistics differ from the reference: check normalisation constants and dtype scaling",
    "eval_input_mismatch": "evaluation data is preprocessed differently from training data: use the same "
                           "normalisation for both",
    "output_width": "the model's output width does not match the number of label classes: fix the final layer",
    "leakage": "evaluation samples also appear in the training data: split indices disjointly",
    "learning_rate": "the learning rate is far from the reference: check the value and the scheduler",
    "batch_size": "the batch size is far from the reference: check the DataLoader batch_size",
    "data_order": "training batches hold far fewer classes than shuffled batches would: the training "
                  "data are ordered (e.g. sorted by class); pass shuffle=True or a shuffling sampler",
    "dead_units": "many activation units never fire: check initialisation, biases and the learning rate",
    "stale_gradients": "gradients are not cleared between steps: call optimizer.zero_grad() every step",
    "eval_mode": "the model's train/eval mode differs from the reference: call model.eval() before "
                 "evaluating and model.train() before training steps (also after an evaluation "
                 "inside the training loop)",
    "loss_broadcast": "loss inputs broadcast to a larger shape: squeeze the output or reshape the target",
    "output_scale": "the model's output scale changed: look at what runs before the output (a softmax or "
                    "sigmoid before a loss that expects logits)",
    "loss_trend": "the loss does not progress as in the reference runs: check that the labels belong to "
                  "the inputs, the learning rate and the loss (a loss that falls far faster than the "
                  "reference's points at targets leaking into the inputs)",
    "architecture": "the model's structure changed (parameter counts, or the ops of a block's graph: see the "
                    "structural diff): re-infer if the architecture change is intended",
    "cost": "the step cost is far above the reference: check input size and batch size",
    "gradients": "gradient norms differ from the reference",
    "updates": "parameter updates differ from the reference: a learning rate, clipping or optimizer "
               "setting shrinks or blows them up",
    "optimizer": "the optimizer configuration differs from the reference",
    "weight_decay": "parameters are weight-decayed differently from the reference (often: biases, norms or "
                    "embeddings put in the decayed group): rebuild the no-decay parameter group",
    "lr_multiplier": "a block's learning rate relative to the others changed: check the per-group learning "
                     "rates and that a scheduler writes its rate into every parameter group",
    "gradient_clipping": "gradient clipping scales the gradients far more than in the reference: check "
                         "clip_grad_norm_'s max_norm against the gradient norms the model has",
    "labels": "labels differ from the reference",
    "non_finite": "a loss, gradient or parameter is NaN or infinite: look for a log or division of zero, an "
                  "exploding learning rate, or data holding NaN; torch.autograd.set_detect_anomaly(True) "
                  "names the op",
    "replica_divergence": "model replicas differ across ranks after the optimizer step: look for a forward "
                          "through the unwrapped model (model.module(...)) that bypasses DDP's gradient "
                          "sync, or rank-dependent code between backward() and optimizer.step()",
    "unsynced_gradients": "gradients differ across ranks at optimizer.step(): DDP's all-reduce was bypassed "
                          "(a forward through model.module, no_sync() on the last micro-batch) or gradients "
                          "were changed on some ranks only (clipping or scaling inside `if rank == 0:`)",
    "duplicate_shards": "ranks train on the same samples: give the DataLoader a DistributedSampler (and call "
                        "sampler.set_epoch(epoch) every epoch) or shard the data by rank",
    "rank_config_mismatch": "ranks run with different settings (learning rate, batch size, world size): "
                            "derive hyperparameters from the world size, not the rank, and set them on every rank",
}
SILENCE = ("if this change is intended, re-run `invar infer` on the new pipeline or set the "
           "invariant's status to disabled in the invariant file")


def causal_graph() -> nx.DiGraph:
    """Families as nodes, 'explains' as edges."""
    g = nx.DiGraph()
    for cause, effects in CAUSAL_EDGES.items():
        for effect in effects:
            g.add_edge(cause, effect)
    return g


@dataclass
class Cause:
    """A root cause: a family at a locus, the violations it explains, and a fix hint."""

    family: str
    severity: str
    summary: str
    locus: Optional[str]
    violations: List[Violation] = field(default_factory=list)
    hint: str = ""

    def to_json(self) -> Dict[str, object]:
        return {"family": self.family, "severity": self.severity, "summary": self.summary,
                "locus": self.locus, "violations": [v.id for v in self.violations], "hint": self.hint}


def explain(violations: Sequence[Violation]) -> List[Cause]:
    """Root causes, most severe and earliest first."""
    if not violations:
        return []
    g = causal_graph()
    families = {v.family for v in violations}
    for f in families:
        g.add_node(f)
    roots = [f for f in families
             if not any(other != f and nx.has_path(g, other, f) and not nx.has_path(g, f, other)
                        for other in families)]
    # An effect family alone (e.g. only gradient norms moved) is its own root.
    causes: Dict[str, Cause] = {}
    for f in roots:
        own = [v for v in violations if v.family == f]
        causes[f] = Cause(f, _max_severity(own), _summary(f, own), _locus(own), list(own),
                          HINTS.get(f, "") + "; " + SILENCE)
    for v in violations:
        if v.family in causes:
            continue
        owner = next((c for c in sorted(causes.values(), key=_rank)
                      if nx.has_path(g, c.family, v.family)), None)
        if owner is not None:
            owner.violations.append(v)
    for c in causes.values():
        _escalate(c)
        c.severity = _max_severity(c.violations)
        for v in c.violations:
            v.hint = HINTS.get(v.family, "")
    return sorted(causes.values(), key=_rank)


def _escalate(c: Cause) -> None:
    """A warning-level root that explains an error-level violation becomes an error."""
    own = [v for v in c.violations if v.family == c.family]
    explained = [v for v in c.violations if v.family != c.family and v.severity == "error"]
    if not explained or any(v.severity == "error" for v in own):
        return
    first = min(explained, key=lambda v: (v.step, v.id))
    for v in own:
        v.severity, v.escalated_by = "error", first.id
    c.summary += f" — an error because it explains {first.family.replace('_', ' ')} ({first.id})"


def _rank(c: Cause) -> tuple:
    own = [v for v in c.violations if v.family == c.family]
    return (-SEVERITY_RANK.get(c.severity, 0), min((v.step for v in own), default=0), c.family)


def _max_severity(vs: Sequence[Violation]) -> str:
    return max((v.severity for v in vs), key=lambda s: SEVERITY_RANK.get(s, 0), default="warning")


def _locus(vs: Sequence[Violation]) -> Optional[str]:
    loci = sorted({v.locus for v in vs if v.locus})
    if not loci:
        return None
    return ", ".join(loci[:6]) + (f" (+{len(loci) - 6} more)" if len(loci) > 6 else "")


def _summary(f: str, vs: Sequence[Violation]) -> str:
    loci = sorted({v.locus for v in vs if v.locus})
    first = min(vs, key=lambda v: (v.step, -v.deviation))  # earliest, then the clearest
    where = f" in {len(loci)} block(s): {_locus(vs)}" if loci else ""
    return f"{f.replace('_', ' ')}{where} — first at step {first.step}: {first.message}"
