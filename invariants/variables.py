"""What the miner knows about the tracer's variables (docs/observations.md): which
templates fit each one, the cause family a violation points to, and its severity.

This is knowledge of the *tracer's vocabulary*, never of a pipeline: a rule matches a
variable name pattern, such as every block's trainable fraction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

# kinds: how a variable is mined (the candidates of each: policy.CANDIDATES)
#   category  - text: constant, else one-of
#   structure - number that should not change: constant
#   fraction  - per-block fraction: all/none, else constant
#   stat      - statistic: range with a learned margin
#   bounded   - fraction-valued statistic: range with a wide floor (dead units)
#   scale     - positive quantity spanning decades: log-range (warning) + magnitude (error)
#   at_least  - count that must not fall below the reference minimum
#   disjoint  - overlap count that must stay 0
#   trend     - loss: must fall over the first steps (plus a log-range)
#   decay     - fraction of a peak (learning rate): log lower bound (warning), and an error
#               bound far below anything the reference reached
#   graph     - a graph fact (items: op kinds, modules): the same multiset (docs/graph.md)
#   skip      - recorded for people, not mined


@dataclass(frozen=True)
class Kind:
    kind: str
    family: str
    severity: str  # of the invariants mined for it; "scale" also adds an error magnitude


# (pattern, phase or None for any, kind); the first match wins.
_RULES: Tuple[Tuple[str, Optional[str], Kind], ...] = (
    # dropout settings while training are configuration; in evaluation, a mode bug
    (r"model\.(dropout_active|dropout_applied)", "train", Kind("structure", "eval_mode", "warning")),
    (r"input\.shape", None, Kind("category", "input_size", "error")),
    (r"input\.side", None, Kind("structure", "input_size", "error")),
    (r"input\.dtype", None, Kind("category", "input_scale", "error")),
    (r"input\.batch", None, Kind("scale", "batch_size", "warning")),
    (r"input\.(mean|std|unit_fraction|c\d+\.(mean|std))", None, Kind("stat", "input_scale", "error")),
    # extremes hinge on single outlier values of a batch: drift, not structure
    (r"input\.(min|max)", None, Kind("stat", "input_scale", "warning")),
    (r"label\.shape", None, Kind("category", "labels", "error")),
    (r"label\.(min|max|distinct)", None, Kind("skip", "labels", "warning")),
    (r"label\.mix", None, Kind("stat", "data_order", "error")),
    (r"label\.classes_seen", None, Kind("skip", "labels", "error")),
    (r"loss\.class_width", None, Kind("structure", "output_width", "error")),
    (r"loss\.probabilities", None, Kind("structure", "output_scale", "error")),
    (r"output\.shape", None, Kind("category", "output_width", "error")),
    (r"output\.width", None, Kind("structure", "output_width", "error")),
    (r"output\.rows_sum_to_one", None, Kind("structure", "output_scale", "error")),
    (r"output\.mean", None, Kind("stat", "output_scale", "warning")),
    (r"output\.(std|absmax)", None, Kind("scale", "output_scale", "warning")),
    # a proxy: a valid reshape changes it; loss.broadcast is the error-level fact
    (r"loss\.input_shapes", None, Kind("category", "loss_broadcast", "warning")),
    (r"loss\.broadcast", None, Kind("structure", "loss_broadcast", "error")),
    (r"loss\.value", None, Kind("trend", "loss_trend", "warning")),
    (r"model\.(training|dropout_active|dropout_applied)", None, Kind("structure", "eval_mode", "error")),
    (r"model\.train_mode_fraction", None, Kind("fraction", "eval_mode", "error")),
    (r"block\..+\.params", None, Kind("structure", "architecture", "error")),
    (r"block\..+\.trainable_fraction", None, Kind("fraction", "frozen", "error")),
    (r"block\..+\.frozen_in_optimizer_fraction", None, Kind("fraction", "frozen", "error")),
    (r"block\..+\.in_optimizer_fraction", None, Kind("fraction", "not_in_optimizer", "error")),
    (r"block\..+\.no_grad_fraction", None, Kind("fraction", "no_gradient", "error")),
    # per-block optimizer settings: which blocks are weight-decayed, and their learning rate
    # relative to the largest of the optimizer's (a head trained at 10x the backbone's)
    (r"block\..+\.decay_fraction", None, Kind("fraction", "weight_decay", "error")),
    (r"block\..+\.lr_scale", None, Kind("structure", "lr_multiplier", "error")),
    (r"block\..+\.grad_norm", None, Kind("scale", "gradients", "warning")),
    (r"block\..+\.update_ratio", None, Kind("scale", "updates", "warning")),
    (r"act\..+\.dead_fraction", None, Kind("bounded", "dead_units", "error")),
    (r"act\..+\.(min|max)", None, Kind("skip", "activations", "warning")),
    (r"optim\.type", None, Kind("category", "optimizer", "warning")),
    (r"optim\.groups", None, Kind("structure", "optimizer", "warning")),
    (r"optim\.(lr_max|g\d+\.lr)", None, Kind("scale", "learning_rate", "warning")),
    (r"optim\.lr_fraction_of_peak", None, Kind("decay", "learning_rate", "error")),
    (r"optim\.zero_grad_calls", None, Kind("at_least", "stale_gradients", "error")),
    # gradient clipping (clip_grad_norm_): its max_norm, and the factor it scaled the gradients by
    (r"clip\.max_norm", None, Kind("structure", "gradient_clipping", "warning")),
    (r"clip\.scale", None, Kind("scale", "gradient_clipping", "warning")),
    # momentum, betas, weight decay, eps ... per group: configuration (a schedule that
    # cycles them falsifies the constant, leaving nothing mined)
    (r"optim\.g\d+\..+", None, Kind("category", "optimizer", "warning")),
    (r"loader\.(train|eval)\.batch_size", None, Kind("scale", "batch_size", "warning")),
    (r"data\.overlap", None, Kind("disjoint", "leakage", "error")),
    (r"data\.overlap_fraction", None, Kind("skip", "leakage", "error")),
    (r"data\.(train|eval)\.(mean|std|unit_fraction|c\d+\.(mean|std))", None, Kind("stat", "input_scale", "error")),
    (r"data\.eval\.(c\d+\.)?(shift|std_ratio)", None, Kind("stat", "input_scale", "error")),
    (r"data\.(train|eval)\.(min|max)", None, Kind("skip", "input_scale", "error")),
    (r"data\.(train|eval)\.(label_max|classes)", None, Kind("skip", "labels", "error")),
    (r"step\.time", None, Kind("scale", "cost", "warning")),
    (r"step\.peak_mem", None, Kind("skip", "cost", "warning")),
    (r"tracer\..+", None, Kind("skip", "tracer", "warning")),
    # The model's graph at its first call (tracer/graph_facts.py, docs/graph.md): a block's
    # ops are its structure; a path cut off from the output or a new gradient-blocking op is
    # a missing gradient known before the first backward; a normaliser before a loss that
    # normalises itself changes the output's scale. Which blocks exist and the ops before
    # the loss are a warning: a deliberate architecture change reads as its diff.
    (r"graph\.block\..+\.ops", None, Kind("graph", "architecture", "error")),
    (r"graph\.block\..+\.(blocking|cut_off)", None, Kind("graph", "no_gradient", "error")),
    (r"graph\.loss_head", None, Kind("graph", "output_scale", "error")),
    (r"graph\.(blocks|head)", None, Kind("graph", "architecture", "warning")),
    # The static phase (solver/), computed at the root model's first call:
    (r"static\.output_polymorphic", None, Kind("structure", "output_width", "error")),
    (r"static\.prepool_map", None, Kind("category", "input_size", "error")),
    (r"static\.(flops|activation_bytes)_per_sample", None, Kind("scale", "cost", "warning")),
    # Cross-rank comparisons of distributed runs (tracer/distributed.py, docs/distributed.md):
    (r"dist\..+\.ranks", None, Kind("skip", "replica_divergence", "error")),
    (r"dist\.world_size", None, Kind("structure", "rank_config_mismatch", "warning")),
    (r"dist\.(step_mismatch|layout_mismatch)", None, Kind("structure", "rank_config_mismatch", "error")),
    (r"dist\.(lr_divergence|batch_size_divergence)", None, Kind("stat", "rank_config_mismatch", "error")),
    (r"dist\.(batch_overlap|shared_samples)", None, Kind("disjoint", "duplicate_shards", "error")),
    (r"dist\.block\..+\.param_divergence", None, Kind("stat", "replica_divergence", "error")),
    (r"dist\.block\..+\.grad_divergence", None, Kind("stat", "unsynced_gradients", "error")),
)
_COMPILED = tuple((re.compile(p + r"\Z"), phase, k) for p, phase, k in _RULES)
UNKNOWN = Kind("skip", "other", "warning")

# Families whose eval-phase observations mean "eval data differs from training data".
EVAL_INPUT_FAMILIES = {"input_scale", "input_size"}
# Families whose values depend on the state of training (how far the model has learned, the
# schedule's position): their value invariants hold only for the steps the reference runs
# observed, never extrapolated past them. Structural facts (kinds structure, category,
# fraction) of these families still hold at every step.
DYNAMICS_FAMILIES = {"output_scale", "loss_trend", "gradients", "updates", "dead_units", "learning_rate",
                     "gradient_clipping"}


def kind_of(variable: str, phase: Optional[str] = None) -> Kind:
    """The rule for a variable name observed in `phase` (UNKNOWN: recorded but not mined)."""
    for pattern, only, kind in _COMPILED:
        if (only is None or only == phase) and pattern.match(variable):
            return kind
    return UNKNOWN


def family_of(variable: str, phase: str) -> str:
    """The cause family a violation on this variable points to."""
    fam = kind_of(variable, phase).family
    if phase == "eval" and fam in EVAL_INPUT_FAMILIES and variable.startswith(("input.", "data.eval.")):
        return "eval_input_mismatch"
    return fam


def dynamics(variable: str, phase: Optional[str] = None) -> bool:
    """Whether a variable's values describe the state of training (DYNAMICS_FAMILIES)."""
    k = kind_of(variable, phase)
    return k.family in DYNAMICS_FAMILIES and k.kind not in ("structure", "category", "fraction")


def once_per_run(variable: str) -> bool:
    """Facts the tracer records once per run (dataset statistics read at the start, the
    static phase's answers): their support is counted in runs, not observations."""
    return variable.startswith(("data.", "static.", "graph."))


def read_phase(variable: str, phase: str) -> str:
    """The phase a relation's target is read in: training-data statistics in train, any
    other variable in the relation's own phase."""
    return "train" if variable.startswith("data.train.") else phase


# A variable whose value follows from another's: an invariant over it is implied when the
# other is constant (`input.side` is part of `input.shape`).
IMPLIED_BY = {"input.side": "input.shape", "output.width": "output.shape"}


def block_of(variable: str) -> Optional[str]:
    """The module a variable is about (`block.layer2.0.grad_norm` -> `layer2.0`)."""
    for prefix in ("block.", "act.", "dist.block.", "graph.block."):
        if variable.startswith(prefix):
            return variable[len(prefix):].rsplit(".", 1)[0]
    return None


# What a variable means, for the one-sentence `why` of an invariant ({0}: the module).
_MEANINGS: Tuple[Tuple[str, str], ...] = (
    (r"input\.shape", "the model input's shape (without batch)"),
    (r"input\.batch", "the batch size of the model input"),
    (r"input\.(mean|std|min|max)", "the model input's batch {m}"),
    (r"input\.unit_fraction", "the fraction of model input values in [0, 1]"),
    (r"input\.c(\d+)\.(mean|std)", "channel {c} of the model input: its {m}"),
    (r"output\.shape", "the model output's shape (without batch)"),
    (r"output\.rows_sum_to_one", "whether output rows are already probabilities (1) or logits (0)"),
    (r"loss\.input_shapes", "the shapes of the loss inputs"),
    (r"loss\.class_width", "the number of class scores the classification loss gets"),
    (r"loss\.probabilities", "whether the classification loss gets probabilities (1) rather than logits (0)"),
    (r"label\.classes_seen", "the number of classes (largest label + 1) in the training batches so far"),
    (r"data\.train\.classes", "the number of classes in the training dataset"),
    (r"output\.width", "the model output's last dimension"),
    (r"label\.mix", "the distinct labels of a training batch over those a shuffled batch would hold"),
    (r"loss\.broadcast", "whether the loss inputs broadcast to a larger shape"),
    (r"loss\.value", "the loss"),
    (r"model\.training", "the model's training flag"),
    (r"model\.dropout_active", "the fraction of dropout modules in training mode"),
    (r"model\.train_mode_fraction", "the fraction of the model's modules in training mode"),
    (r"model\.dropout_applied", "the number of dropout calls that dropped units in one forward"),
    (r"block\.(.+)\.params", "the parameter count of block `{0}`"),
    (r"block\.(.+)\.trainable_fraction", "the fraction of block `{0}`'s parameters that are trainable"),
    (r"block\.(.+)\.in_optimizer_fraction", "the fraction of block `{0}`'s trainable parameters held by the optimizer"),
    (r"block\.(.+)\.frozen_in_optimizer_fraction", "the fraction of block `{0}`'s frozen parameters held by an "
                                                   "optimizer"),
    (r"block\.(.+)\.no_grad_fraction", "the fraction of block `{0}`'s trainable parameters without a gradient at optimizer.step()"),
    (r"block\.(.+)\.grad_norm", "the gradient norm of block `{0}`"),
    (r"block\.(.+)\.update_ratio", "the update ratio |dw|/|w| of block `{0}`"),
    (r"block\.(.+)\.decay_fraction", "the fraction of block `{0}`'s trainable parameters in weight-decayed "
                                      "optimizer groups"),
    (r"block\.(.+)\.lr_scale", "block `{0}`'s learning rate over the largest of the optimizer's"),
    (r"clip\.max_norm", "the max_norm gradients are clipped to"),
    (r"clip\.scale", "the factor gradient clipping scaled the gradients by"),
    (r"act\.(.+)\.dead_fraction", "the fraction of units of `{0}` that never fire in a batch"),
    (r"optim\.zero_grad_calls", "the number of zero_grad() calls between optimizer steps"),
    (r"optim\.lr_max", "the largest learning rate over parameter groups"),
    (r"optim\.lr_fraction_of_peak", "the largest learning rate as a fraction of its peak so far"),
    (r"data\.eval\.shift", "the eval data's mean minus the training data's, in training standard deviations"),
    (r"data\.eval\.c(\d+)\.shift", "channel {c} of the eval data: its mean minus the training data's, "
                                   "in training standard deviations"),
    (r"data\.eval\.std_ratio", "the eval data's standard deviation over the training data's"),
    (r"data\.eval\.c(\d+)\.std_ratio", "channel {c} of the eval data: its standard deviation over the "
                                       "training data's"),
    (r"data\.(train|eval)\.unit_fraction", "the fraction of the {0} data's values in [0, 1] (sampled)"),
    (r"data\.(train|eval)\.(mean|std)", "the {0} dataset's {m} (sampled)"),
    (r"loader\.(train|eval)\.batch_size", "the {0} DataLoader's batch size"),
    (r"data\.overlap", "the number of evaluation samples that are also training samples"),
    (r"step\.time", "the wall time per optimizer step (median of recent steps)"),
    (r"graph\.blocks", "the blocks whose forward has ops in the model's graph"),
    (r"graph\.block\.(.+)\.ops", "the op kinds of block `{0}`'s graph"),
    (r"graph\.block\.(.+)\.blocking", "the gradient-blocking ops (detach, .data, argmax, no_grad, ...) in "
                                         "block `{0}`"),
    (r"graph\.block\.(.+)\.cut_off", "block `{0}`'s parametrised modules with no differentiable path to the "
                                        "output"),
    (r"graph\.head", "the ops between the last parametrised op and the loss"),
    (r"graph\.loss_head", "the ops before the loss that do not fit what it expects (a softmax before a loss "
                           "that expects logits)"),
    (r"static\.output_polymorphic", "whether the output is provably [B, K] for every batch size B"),
    (r"static\.prepool_map", "the spatial size of the last feature map that still depends on the input size"),
    (r"static\.flops_per_sample", "the predicted forward FLOPs per sample"),
    (r"static\.activation_bytes_per_sample", "the predicted activation memory per sample"),
)
_MEANINGS_COMPILED = tuple((re.compile(p + r"\Z"), text) for p, text in _MEANINGS)


def describe(variable: str) -> str:
    """A variable's meaning in words (the name itself when no phrase is known)."""
    for pattern, text in _MEANINGS_COMPILED:
        m = pattern.match(variable)
        if m:
            groups = m.groups()
            return text.format(*groups, m=groups[-1] if groups else "", c=groups[0] if groups else "")
    return f"`{variable}`"
