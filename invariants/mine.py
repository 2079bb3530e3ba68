"""Mine invariants from reference runs: instantiate templates over the traced variables,
keep the candidates that are never falsified *and* justified by enough support, suppress
the implied ones, and remember why every other candidate was discarded.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from invariants.model import Invariant, InvariantSet, SCHEMA_VERSION, Support, When, make_id
from invariants.templates.base import Discard, Fit, Series, fmt
from invariants.templates.basic import Constant, Magnitude, OneOf, Range
from invariants.templates.block import AllNone, Disjoint
from invariants.templates.relational import Equal, Ratio
from invariants.templates.temporal import Schedule, Trend
from invariants.variables import block_of, describe, family_of, kind_of

Row = Tuple[int, str, str, Optional[float], Optional[str]]

# Spread floors: the smallest spread a margin is computed from, so that a variable that
# never moved in the reference still tolerates measurement noise.
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
# A learning rate that falls this far below the lowest fraction of its peak the reference
# reached has collapsed (a scheduler stepped per batch, a decay applied every step).
LR_COLLAPSE = 100.0
# The learning rate at a step may differ this much from the reference's at that step before
# it is reported (a warning: a new schedule is a configuration change).
SCHEDULE_FACTOR = 3.0


@dataclass
class MineResult:
    """The invariants, and every candidate that was not emitted with its reason."""

    invariants: List[Invariant]
    discarded: List[Tuple[str, str]] = field(default_factory=list)
    suppressed: int = 0
    seconds: float = 0.0


def build_series(runs: Sequence[Iterable[Row]]) -> Dict[Tuple[str, str], Series]:
    """(phase, variable) -> Series over all runs (empty tuples where a run lacks it)."""
    table: Dict[Tuple[str, str], List[List[Tuple[int, Any]]]] = {}
    for i, rows in enumerate(runs):
        for step, phase, variable, value, text in rows:
            per_run = table.setdefault((phase, variable), [[] for _ in runs])
            per_run[i].append((step, value if value is not None else text))
    return {k: Series(k[1], k[0], tuple(tuple(r) for r in v)) for k, v in table.items()}


class _Miner:
    def __init__(self, series: Dict[Tuple[str, str], Series], n_runs: int):
        self.series = series
        self.n_runs = n_runs
        self.out: Dict[str, Invariant] = {}
        self.discarded: List[Tuple[str, str]] = []
        self.suppressed = 0

    def emit(self, template: Any, target: Tuple[str, ...], phase: str, result: Fit | Discard,
             severity: str, window_end: Optional[int], what: str) -> None:
        iid = make_id(template.NAME, target, phase)
        if isinstance(result, Discard):
            self.discarded.append((iid, result.reason))
            return
        span = list(result.support_span) if result.support_span is not None else None
        self.out[iid] = Invariant(
            id=iid, template=template.NAME, target=target, expect=dict(result.expect),
            when=When(phase=phase, steps=(0, window_end)), severity=severity, status="proposed",
            support=Support(runs=result.runs, observations=result.observations, span=span),
            why=f"{what} {_observed(template.NAME, span)} across the reference runs ({result.runs} runs, "
                f"{result.observations} observations); expected: {template.expected(result.expect)}.",
            locus=block_of(target[0]))

    def scale_floor(self, s: Series) -> float:
        """The spread floor of a statistic: relative to the data's scale for means, stds and
        unit fractions of inputs, outputs and datasets; else 1e-3 of its magnitude."""
        var = s.variable
        if var == "label.mix":
            return MIX_FLOOR
        if var.startswith(("input.", "output.", "data.")):
            # dataset statistics come from 32 samples: their sampling error, not a batch's
            f = DATA_SCALE_FLOOR if var.startswith("data.") else OUTPUT_MEAN_FLOOR if var == "output.mean" \
                else SCALE_FLOOR
            if var.endswith("unit_fraction"):
                return UNIT_FRACTION_FLOOR * f / SCALE_FLOOR
            if var.endswith((".shift", ".std_ratio")):
                return f  # already in units of the training data's std
            if var.endswith((".mean", ".min", ".max")):
                companion = self.series.get((s.phase, var.rsplit(".", 1)[0] + ".std"))
                if companion is not None and companion.values:
                    return f * statistics.fmean(abs(float(v)) for v in companion.values) + 1e-6
            if var.endswith(".std"):
                return f * statistics.fmean(abs(float(v)) for v in s.values) + 1e-6
        return 1e-3 * max((abs(float(v)) for v in s.values), default=0.0) + 1e-6

    def single(self, s: Series) -> None:
        k = kind_of(s.variable)
        if s.variable.startswith("model.dropout_") and s.phase == "train":
            k = replace(k, severity="warning")  # dropout settings while training are configuration
        target, phase = (s.variable,), s.phase
        what = f"In {phase}, {describe(s.variable)}"
        dyn_end = s.last_step  # training dynamics are only known for the traced steps
        if k.kind == "skip":
            self.discarded.append((make_id("*", target, phase), "not mined: recorded for reports only"))
            return
        if k.kind == "category":
            fit = Constant.fit(s, self.n_runs)
            if isinstance(fit, Discard):
                self.discarded.append((make_id("constant", target, phase), fit.reason))
                self.emit(OneOf, target, phase, OneOf.fit(s, self.n_runs), k.severity, None, what)
            else:
                self.emit(Constant, target, phase, fit, k.severity, None, what)
        elif k.kind == "structure":
            self.emit(Constant, target, phase, Constant.fit(s, self.n_runs), k.severity, None, what)
        elif k.kind == "fraction":
            fit = AllNone.fit(s, self.n_runs)
            if isinstance(fit, Discard):
                self.discarded.append((make_id("all_none", target, phase), fit.reason))
                self.emit(Constant, target, phase, Constant.fit(s, self.n_runs), k.severity, None, what)
            else:
                self.emit(AllNone, target, phase, fit, k.severity, None, what)
        elif k.kind == "disjoint":
            self.emit(Disjoint, target, phase, Disjoint.fit(s, self.n_runs), k.severity, None, what)
        elif k.kind == "at_least":
            fit = Range.fit(s, log=False, margin=0.0, floor=0.0, lower_only=True)
            if isinstance(fit, Fit) and fit.expect["min"] <= 0:
                fit = Discard("trivial: the reference minimum is 0")
            self.emit(Range, target, phase, fit, k.severity, None, what)
        elif k.kind == "stat":
            end = None if k.severity == "error" else dyn_end
            # dataset statistics are read once per run: three runs are enough support
            once = s.variable.startswith("data.")
            self.emit(Range, target, phase, Range.fit(s, log=False, margin=4.0, floor=self.scale_floor(s),
                                                     per_run=once), k.severity, end, what)
        elif k.kind == "bounded":
            self.emit(Range, target, phase, Range.fit(s, log=False, margin=4.0, floor=DEAD_FLOOR,
                                                     lo_clip=0.0, hi_clip=1.0), k.severity, dyn_end, what)
        elif k.kind == "scale":
            # static.* facts are computed once per run: three runs are enough support
            once = s.variable.startswith("static.")
            self.emit(Range, target, phase, Range.fit(s, log=True, margin=4.0, floor=LOG_FLOOR, per_run=once),
                      "warning", None if once else dyn_end, what)
            if k.family in ("batch_size", "learning_rate", "cost", "output_scale"):
                self.magnitude(s, k.family, what, per_run=once)
            if s.variable == "optim.lr_max":  # the schedule itself, step by step
                self.emit(Schedule, target, phase, Schedule.fit(s, self.n_runs, SCHEDULE_FACTOR),
                          "warning", dyn_end, what)
        elif k.kind == "decay":
            self.emit(Range, target, phase, Range.fit(s, log=True, margin=4.0, floor=LOG_FLOOR, lower_only=True),
                      "warning", dyn_end, what)
            fit = Range.fit(s, log=True, margin=0.0, floor=0.0)
            if isinstance(fit, Fit):
                fit = Fit({"min": float(f"{fit.expect['min'] / LR_COLLAPSE:.6g}"), "max": 1.0},
                          fit.support_span, fit.observations, fit.runs)
            self.emit(Magnitude, target, phase, fit, "error", dyn_end, what)
        elif k.kind == "trend":
            self.emit(Trend, target, phase, Trend.fit(s, self.n_runs, dyn_end), k.severity, dyn_end, what)
            self.emit(Range, target, phase, Range.fit(s, log=True, margin=4.0, floor=LOG_FLOOR),
                      "warning", dyn_end, what)

    def magnitude(self, s: Series, family: str, what: str, per_run: bool = False) -> None:
        fit = Magnitude.fit(s, self.n_runs, per_run)
        if isinstance(fit, Fit) and family in ("learning_rate", "cost"):
            # Warm-up and one-cycle schedules legitimately start low; only "far too high"
            # (learning rate, cost) is an error.
            fit = Fit({"min": 0.0, "max": fit.expect["max"]}, fit.support_span, fit.observations, fit.runs)
        self.emit(Magnitude, (s.variable,), s.phase, fit, "error", None, what)

    def relations(self) -> None:
        # The label range of the whole training set (exact for tensor-backed data sets),
        # not of one batch: a small batch may miss the largest class.
        # Class scores vs classes: the scores the classification loss gets (else the
        # output), against all labels of the training set where the dataset holds them and
        # the largest label of the training batches seen so far.
        width_var = next((v for v in ("loss.class_width", "output.width") if ("train", v) in self.series), None)
        for classes_var in ("data.train.classes", "label.classes_seen"):
            width, classes = self.series.get(("train", width_var or "")), self.series.get(("train", classes_var))
            if width is not None and classes is not None:
                self.emit(Ratio, (width_var, classes_var), "train", Ratio.fit(width, classes, RATIO_FLOOR),
                          "error", None, f"{describe(width_var)} / {describe(classes_var)}")
        # Eval vs train data: means and stds are compared scale-free by the tracer's
        # data.eval.shift / std_ratio ranges; the fraction of values in [0, 1] directly.
        ev, tr = self.series.get(("eval", "data.eval.unit_fraction")), self.series.get(("train", "data.train.unit_fraction"))
        if ev is not None and tr is not None:
            floor = UNIT_FRACTION_SHIFT_FLOOR
            self.emit(Equal, ("data.eval.unit_fraction", "data.train.unit_fraction"), "eval", Equal.fit(ev, tr, floor),
                      "error", None, "eval data unit_fraction - training data unit_fraction")

    def suppress(self) -> None:
        """Drops invariants implied by others (Daikon's implication suppression)."""
        constant = {i.target[0] + "@" + i.when.phase for i in self.out.values() if i.template == "constant"}
        implied: Dict[str, str] = {}
        for iid, inv in self.out.items():
            key = lambda v: v + "@" + inv.when.phase  # noqa: E731
            if inv.template in ("equal", "ratio") and all(key(t) in constant for t in inv.target):
                implied[iid] = "implied by constant values of both targets"
            elif inv.target == ("input.side",) and key("input.shape") in constant:
                implied[iid] = "implied by constant input.shape"
            elif inv.target == ("output.width",) and key("output.shape") in constant:
                implied[iid] = "implied by constant output.shape"
        for iid, reason in implied.items():
            del self.out[iid]
            self.discarded.append((iid, reason))
        self.suppressed = len(implied)


def _observed(template: str, span: Optional[List[Any]]) -> str:
    """What the reference runs showed, in words (the expectation adds the margin)."""
    if not span:
        return "held"
    if template == "trend":
        lo, hi = min(span), max(span)
        return f"changed by {100 * lo:+.1f}% to {100 * hi:+.1f}% over the window"
    if all(isinstance(v, (int, float)) for v in span):
        lo, hi = min(span), max(span)
        return f"was {fmt(float(lo))}" if lo == hi else f"ranged over [{fmt(float(lo))}, {fmt(float(hi))}]"
    if template == "one_of":
        return "took the values " + ", ".join(fmt(v) for v in span)
    return "was " + ", ".join(fmt(v) for v in span)


def mine(runs: Sequence[Iterable[Row]], meta: Optional[Dict[str, Any]] = None) -> Tuple[InvariantSet, MineResult]:
    """Mines an InvariantSet from the rows of each reference run."""
    start = time.perf_counter()
    series = build_series(runs)
    m = _Miner(series, len(runs))
    for key in sorted(series):
        m.single(series[key])
    m.relations()
    m.suppress()
    invariants = sorted(m.out.values(), key=lambda i: (i.locus or "", i.template, i.id))
    result = MineResult(invariants, m.discarded, m.suppressed, time.perf_counter() - start)
    return InvariantSet(schema=SCHEMA_VERSION, meta=dict(meta or {}), invariants=tuple(invariants)), result


def family(inv: Invariant) -> str:
    """The cause family a violation of this invariant points to."""
    return family_of(inv.target[0], inv.when.phase)
