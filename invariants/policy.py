"""The mining policy as data: how much support justifies an invariant, how far beyond the
reference runs a bound sits, the spread floors, and which candidates each kind of variable
(invariants/variables.py) is mined into.

Every number the miner and the templates use is named here, once. The templates know how
to fit and check themselves; this module says which of them to try, with what parameters.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

# -- support ------------------------------------------------------------------------------
MIN_OBSERVATIONS = 6   # fewer and a candidate is not justified, whatever it says
PER_RUN_SUPPORT = 3    # a once-per-run fact (dataset statistics, static shapes) needs this many runs
MIN_PAIRS = 3          # paired observations a ratio is fitted on
ONE_OF_MAX_VALUES = 4  # more distinct values and a category is not a one-of
SCHEDULE_MIN_POINTS = 6  # steps seen in every run before a schedule is learned

# -- margins ------------------------------------------------------------------------------
MARGIN = 4.0           # bounds sit this many spreads beyond the observed extremes
EQUAL_SLACK = 1.5      # an offset's tolerance covers the largest observed deviation this many times
DECADE = 10.0          # a magnitude bound: a factor of ten beyond the observed span
# A learning rate that falls this far below the lowest fraction of its peak the reference
# reached has collapsed (a scheduler stepped per batch, a decay applied every step).
LR_COLLAPSE = 100.0
# The learning rate at a step may differ this much from the reference's at that step before
# it is reported: below, a warning (a new schedule is a configuration change, judged by its
# consequences); above, an error (a rate the reference never trained with at that point).
SCHEDULE_FACTOR = 3.0
# Learning progress: the reference runs all fell by more than this over the window (and
# beyond their noise), and a checked run must fall by at least this fraction of the
# smallest reference fall (in log terms).
TREND_MIN_FALL = 0.05
TREND_KEEP = 1 / 3
TREND_EDGE = 3         # observations averaged at each end of the window
# A loss that ends this many times lower (relative to its start) than any reference run's
# falls faster than learning can: targets visible in the inputs.
LEAK_FACTOR = 10.0

# -- checking -----------------------------------------------------------------------------
# `invar check` observes every optimizer step before CHECK_SAMPLING[0], then every
# CHECK_SAMPLING[1]-th (structural bugs by step 1, a low overhead after); the envelopes
# are fitted on the reference values such a check would see.
CHECK_SAMPLING = (5, 5)

# A comparison of evaluation with training batches (templates `eval_shift`, `eval_scale`)
# needs this many training batches before their spread says what sampling noise is.
MIN_TRAIN_BATCHES = 3

# -- spread floors ----------------------------------------------------------------------
# The smallest spread a margin is computed from, so that a variable that never moved in the
# reference still tolerates measurement noise.
LOG_FLOOR = 0.05          # log10 units: a factor of 1.12 per spread
DEAD_FLOOR = 0.0625       # dead-unit fraction: 4 spreads = a quarter of the units
RATIO_FLOOR = 0.01
# Eval vs train data: a fraction of values in [0, 1] this far apart is a different
# normalisation, not sampling noise.
UNIT_FRACTION_SHIFT_FLOOR = 0.1
# A batch statistic's spread floor relative to the data's own scale: a mean's floor is this
# fraction of the data's std, a std's this fraction of itself (bounds sit 4 spreads out, so
# a mean may move 0.2 std and a std 20 % beyond the reference extremes: batch-size noise,
# not a normalisation change).
SCALE_FLOOR = 0.05
UNIT_FRACTION_FLOOR = 0.02
DATA_SCALE_FLOOR = 0.1     # dataset statistics: 32 samples read once per run
OUTPUT_MEAN_FLOOR = 0.1    # the mean of logits drifts freely (cross-entropy ignores it)
# Distinct labels per batch vary by chance in small batches (a 4-class batch of 8 misses a
# class now and then: 0.83 of the expected mix); class-sorted data give 1 / classes.
MIX_FLOOR = 0.1
RELATIVE_FLOOR = 1e-3      # any other statistic: this fraction of its magnitude


def spread_floor(variable: str, values: Any, companion_std: Optional[Any]) -> float:
    """The spread floor of a statistic: relative to the data's scale for means, stds and
    unit fractions of inputs, outputs and datasets (`companion_std`: the values of the
    matching `.std` variable, for a mean or an extreme); else RELATIVE_FLOOR of its magnitude."""
    if variable == "label.mix":
        return MIX_FLOOR
    if variable.startswith(("input.", "output.", "data.")):
        # dataset statistics come from 32 samples: their sampling error, not a batch's
        f = DATA_SCALE_FLOOR if variable.startswith("data.") else OUTPUT_MEAN_FLOOR \
            if variable == "output.mean" else SCALE_FLOOR
        if variable.endswith("unit_fraction"):
            return UNIT_FRACTION_FLOOR * f / SCALE_FLOOR
        if variable.endswith((".shift", ".std_ratio")):
            return f  # already in units of the training data's std
        if variable.endswith((".mean", ".min", ".max")) and companion_std:
            return f * statistics.fmean(abs(float(v)) for v in companion_std) + 1e-6
        if variable.endswith(".std"):
            return f * statistics.fmean(abs(float(v)) for v in values) + 1e-6
    return RELATIVE_FLOOR * max((abs(float(v)) for v in values), default=0.0) + 1e-6


# -- candidates ---------------------------------------------------------------------------
OWN_SCALE = "own scale"  # a `floor` parameter: the variable's spread_floor

# The step window of a mined invariant: all steps, or only those the reference runs traced
# (training dynamics after them are unknown).
OPEN, TRACED = "open", "traced"
TRACED_FOR_WARNINGS = "traced for warnings"  # error-level facts hold at every step
TRACED_UNLESS_ONCE = "traced unless once per run"  # a once-per-run fact is no dynamics


@dataclass(frozen=True)
class Candidate:
    """One invariant a kind of variable is mined into: a template and its fit parameters,
    the severity (None: the variable's), the step window, the families it applies to
    (empty: all), the variable it is limited to (None: any), and what to try instead
    when it is discarded."""

    template: str
    params: Mapping[str, Any] = field(default_factory=dict)
    severity: Optional[str] = None
    window: str = OPEN
    families: Tuple[str, ...] = ()
    variable: Optional[str] = None
    fallback: Optional["Candidate"] = None

    def applies(self, variable: str, family: str) -> bool:
        return (not self.families or family in self.families) and self.variable in (None, variable)


_STAT = dict(log=False, margin=MARGIN)
_SCALE = dict(log=True, margin=MARGIN, floor=LOG_FLOOR)

# variables.Kind.kind -> the candidates mined for a variable of that kind, in order.
CANDIDATES: Dict[str, Tuple[Candidate, ...]] = {
    # text: constant, else one-of
    "category": (Candidate("constant", fallback=Candidate("one_of")),),
    # a number that should not change
    "structure": (Candidate("constant"),),
    # a per-block fraction: all/none, else constant
    "fraction": (Candidate("all_none", fallback=Candidate("constant")),),
    # an overlap count that must stay 0
    "disjoint": (Candidate("disjoint"),),
    # a count that must not fall below the reference minimum (a minimum of 0 says nothing)
    "at_least": (Candidate("range", dict(log=False, margin=0.0, floor=0.0, lower_only=True, positive=True)),),
    # a statistic: a range with a margin learned from the spread, floored at the data's scale
    "stat": (Candidate("range", dict(_STAT, floor=OWN_SCALE), window=TRACED_FOR_WARNINGS),),
    # a fraction-valued statistic (dead units): a range with a wide floor, within [0, 1]
    "bounded": (Candidate("range", dict(_STAT, floor=DEAD_FLOOR, clip=(0.0, 1.0)), window=TRACED),),
    # a positive quantity spanning decades: a log-range (drift, a warning) and, for some
    # families, its order of magnitude (an error). Warm-up and one-cycle schedules
    # legitimately start low: only "far too high" is an error for the learning rate and cost.
    "scale": (Candidate("range", _SCALE, severity="warning", window=TRACED_UNLESS_ONCE),
              Candidate("magnitude", dict(below=DECADE, above=DECADE), severity="error",
                        families=("batch_size", "output_scale")),
              Candidate("magnitude", dict(below=None, above=DECADE), severity="error",
                        families=("learning_rate", "cost")),
              # the learning-rate schedule itself, step by step: below it a warning (a
              # consequence envelope decides), far above it an error
              Candidate("schedule", dict(factor=SCHEDULE_FACTOR), severity="warning", window=TRACED,
                        variable="optim.lr_max"),
              Candidate("ceiling", dict(factor=SCHEDULE_FACTOR), severity="error", window=TRACED,
                        variable="optim.lr_max"),
              # consequence envelopes: a block's updates and gradients neither collapse nor explode
              Candidate("level", dict(factor=DECADE, sampling=CHECK_SAMPLING), severity="error", window=TRACED,
                        families=("updates", "gradients"))),
    # a fraction of a peak (the learning rate): a log lower bound (warning), and an error
    # bound far below anything the reference reached
    "decay": (Candidate("range", dict(_SCALE, lower_only=True), severity="warning", window=TRACED),
              Candidate("magnitude", dict(below=LR_COLLAPSE, top=1.0), severity="error", window=TRACED)),
    # a graph fact: the same items (op kinds, modules) as in every reference run
    "graph": (Candidate("multiset"),),
    # the loss: learning progress over the window (a consequence envelope), and its scale
    "trend": (Candidate("progress", dict(min_fall=TREND_MIN_FALL, keep=TREND_KEEP, leak=LEAK_FACTOR,
                                         sampling=CHECK_SAMPLING), severity="error", window=TRACED),
              Candidate("range", _SCALE, severity="warning", window=TRACED)),
}


# Families mined per block only where the reference's blocks differ in them: when every
# block has the same value it is a global setting (an optimizer's default weight decay),
# whose change is configuration (optim.*), not a block moving between groups.
CONTRAST_FAMILIES = frozenset({"weight_decay"})


def window_end(candidate: Candidate, severity: str, once: bool, dynamics: bool, last_step: int) -> Optional[int]:
    """The last step of a mined invariant's window (None: open). A value of the training
    dynamics holds only where the reference observed it: never extrapolated past it."""
    traced = dynamics or {OPEN: False, TRACED: True, TRACED_FOR_WARNINGS: severity != "error",
                          TRACED_UNLESS_ONCE: not once}[candidate.window]
    return last_step if traced else None


@dataclass(frozen=True)
class Relation:
    """A two-variable candidate: the first of `first` the reference observed, against
    `second` (read in its own phase, variables.read_phase)."""

    template: str
    first: Tuple[str, ...]
    second: str
    phase: str
    floor: float
    severity: str = "error"


RELATIONS: Tuple[Relation, ...] = (
    # Class scores vs classes: the scores the classification loss gets (else the output),
    # against the labels of the whole training set where the dataset holds them (exact for
    # tensor-backed data sets) and the largest label of the training batches seen so far
    # (a small batch may miss the largest class).
    Relation("ratio", ("loss.class_width", "output.width"), "data.train.classes", "train", RATIO_FLOOR),
    Relation("ratio", ("loss.class_width", "output.width"), "label.classes_seen", "train", RATIO_FLOOR),
    # Eval vs train data: means and stds are compared scale-free by the tracer's
    # data.eval.shift / std_ratio ranges; the fraction of values in [0, 1] directly.
    Relation("equal", ("data.eval.unit_fraction",), "data.train.unit_fraction", "eval", UNIT_FRACTION_SHIFT_FLOOR),
)
