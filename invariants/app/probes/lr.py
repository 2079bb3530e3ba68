"""`invar probe lr`: the learning-rate range test, run on the user's unmodified script.

`RateSetter` is an Extension that sets the learning rate of every parameter group of the
primary optimizer before each of its steps, keeping the groups' ratios (the largest group
stands for "the" rate), so whatever the script's scheduler set in between is overridden
(the scheduler is suspended for the probe). `LRRangeProbe` raises that rate geometrically
from `lr_min` to `lr_max` over K steps, pairs each loss with the rate of the update that
preceded it, and ends the run when the loss diverges. `analyse` turns the curve into the
report: the steepest-descent rate, the divergence rate and the verdict (docs/probes.md
gives the rules and why).

The probe is active by design: it changes the learning rate of the run it traces (never a
file of the user's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tracer.extension import Extension, SessionView

# The run ends once the causally smoothed loss exceeds this multiple of its minimum (the
# criterion of the original LR range test, Smith 2017, and fastai's lr_find) or is not finite.
DIVERGE_FACTOR = 4.0
STOP_SMOOTHING = 0.7   # EMA factor of the stopping rule (a window of about 3 steps)
MIN_POINTS = 5         # points before the stopping rule may fire
SMOOTH_DECADES = 0.25  # half-width (in decades of lr) of the centred smoother of the analysis
TOO_HIGH_FACTOR = math.sqrt(10)  # configured within half a decade of divergence: too high
TOO_LOW_FACTOR = 100.0           # two decades below the steepest descent: too low
SLOPE_DECADES = 0.5              # the baseline of a slope of the smoothed curve
NOISE_SIGMAS = 3.0               # a fall or rise of the smoothed loss this many noise levels is real
REGION_SLOPE = 0.5               # the region: where the descent is at least half the steepest


class RateSetter(Extension):
    """Sets the primary optimizer's rates before each of its steps: `rate(k)` for the k-th
    step (0-based) is given to the group with the largest configured rate, the other groups
    keep their ratio to it. Records the losses of the training steps in between."""

    name = "probe_lr"

    def __init__(self, rate: Callable[[int], float]):
        self.rate = rate
        self.session: Optional[SessionView] = None
        self.optimizer: Any = None
        self.ratios: List[float] = []
        self.configured: List[float] = []  # each group's configured rate (its scheduler's initial_lr)
        self.steps = 0
        self.rates: List[float] = []       # the top rate of each step taken
        self.losses: List[Optional[float]] = []  # per step: the mean training loss after it
        self._pending: List[Tuple[int, float]] = []  # (updates applied, training loss), not yet paired
        self._handles: List[Any] = []
        self.error: Optional[str] = None

    def attach(self, session: SessionView) -> None:
        import torch.optim.optimizer as opt
        self.session = session
        self._handles = [opt.register_optimizer_step_pre_hook(self._pre_step),
                         opt.register_optimizer_step_post_hook(self._post_step)]

    def on_end(self, session: SessionView) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.optimizer is None and self.error is None:
            self.error = ("no torch.optim optimizer stepped in this process: the script updates its parameters "
                          "itself, trains in processes it spawns, or never trained, so the probe cannot set its "
                          "learning rate")

    def on_loss(self, session: SessionView, name: str, pair: tuple, result: Any) -> None:
        import torch
        root = session.root
        if (root is None or not root.training or not isinstance(result, torch.Tensor)
                or not result.requires_grad or result.numel() == 0):
            return  # an evaluation loss, or one before the model is known
        # measured on the weights of `self.steps` updates (inside a closure step, before its own)
        self._pending.append((self.steps, float(result.detach().float().mean())))

    # -- the optimizer hooks (outside the session's guard: they must never raise) --------------
    def _is_primary(self, optimizer: Any) -> bool:
        if self.optimizer is not None:
            return optimizer is self.optimizer
        root = self.session.root if self.session is not None else None
        if root is not None:
            held = {id(p) for g in optimizer.param_groups for p in g["params"]}
            if not any(id(p) in held for p in root.parameters()):
                return False
        self.optimizer = optimizer
        self.configured = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        top = max(self.configured) if self.configured else 0.0
        self.ratios = [c / top if top > 0 else 1.0 for c in self.configured]
        return True

    def _pre_step(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        try:
            if not self._is_primary(optimizer):
                return
            self._points()
            top = self.rate(self.steps)
            for group, ratio in zip(optimizer.param_groups, self.ratios):
                group["lr"] = top * ratio
            self.rates.append(top)
        except Exception as e:  # a probe fault must not reach the script
            self.error = f"{type(e).__name__}: {e}"

    def _post_step(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        if optimizer is self.optimizer:
            self.steps += 1

    def _points(self) -> None:
        """Each loss measures the model of the updates applied before it: the mean loss after
        j updates is paired with the rate of the j-th (a step with a closure measures its loss
        after this hook, a plain one before it)."""
        done = len(self.losses)
        ready = [(n, l) for n, l in self._pending if n <= len(self.rates)]
        self._pending = [(n, l) for n, l in self._pending if n > len(self.rates)]
        for j in sorted({n for n, _ in ready if n > done}):
            values = [l for n, l in ready if n == j]
            self.losses.extend([None] * (j - 1 - len(self.losses)))  # updates no loss measured
            loss = sum(values) / len(values)
            self.losses.append(loss)
            self.after_point(loss)

    def after_point(self, loss: float) -> None:
        """A step's loss is known (the sweep decides here whether to stop)."""

    def curve(self) -> List[Tuple[float, float]]:
        """(rate of the update, loss after it), one per step whose loss was measured."""
        return [(r, l) for r, l in zip(self.rates, self.losses) if l is not None]

    @property
    def configured_top(self) -> Optional[float]:
        return max(self.configured) if self.configured else None


class LRRangeProbe(RateSetter):
    """The sweep: step k's top rate is lr_min * (lr_max / lr_min) ** (k / (K - 1)); ends the
    run when the loss diverges."""

    def __init__(self, steps: int, lr_min: float, lr_max: float):
        self.points, self.lr_min, self.lr_max = steps, lr_min, lr_max
        super().__init__(self.sweep_rate)
        self._ema: Optional[float] = None
        self._seen = 0
        self._best = math.inf
        self.stopped_at: Optional[float] = None

    def sweep_rate(self, k: int) -> float:
        k = min(k, self.points - 1)
        return self.lr_min * (self.lr_max / self.lr_min) ** (k / max(1, self.points - 1))

    def after_point(self, loss: float) -> None:
        n = len(self.losses)
        if not math.isfinite(loss):
            return self._stop(f"the loss became {loss} at lr {self.rates[n - 1]:.3g}")
        self._seen += 1
        self._ema = loss if self._ema is None else STOP_SMOOTHING * self._ema + (1 - STOP_SMOOTHING) * loss
        self._best = min(self._best, self._ema)
        if self._seen >= MIN_POINTS and self._ema > DIVERGE_FACTOR * self._best:
            self._stop(f"the smoothed loss passed {DIVERGE_FACTOR:g}x its minimum at lr {self.rates[n - 1]:.3g}")

    def _stop(self, reason: str) -> None:
        if self.stopped_at is None and self.session is not None:
            self.stopped_at = self.rates[len(self.losses) - 1]
            self.session.request_stop(f"lr probe: {reason}")

    def facts(self) -> Dict[str, Any]:
        return {"probe_result": {"probe": "lr", "curve": self.curve(), "lr_configured": self.configured_top,
                                 "groups": self.configured, "stopped_at": self.stopped_at,
                                 "steps": self.steps, "error": self.error,
                                 "lr_min": self.lr_min, "lr_max": self.lr_max, "points": self.points}}


# -- the analysis (pure: no torch) -------------------------------------------------------------
@dataclass
class LRReport:
    """What `probe lr` found."""

    lr_configured: Optional[float]
    lr_steepest: Optional[float]
    lr_diverge: Optional[float]
    verdict: str                     # ok | too_high | too_low | unknown
    reason: str
    curve: List[Tuple[float, float]]           # (lr, raw loss)
    smoothed: List[Tuple[float, float]]        # (lr, smoothed loss)
    region: Optional[Tuple[float, float]] = None  # the steepest-descent region
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"lr_configured": self.lr_configured, "lr_steepest": self.lr_steepest,
                "lr_diverge": self.lr_diverge, "verdict": self.verdict, "reason": self.reason,
                "steepest_region": list(self.region) if self.region else None,
                "curve": [[lr, loss] for lr, loss in self.smoothed],
                "raw_curve": [[lr, loss] for lr, loss in self.curve], "notes": self.notes,
                "active": "the probe set the learning rate itself (its scheduler suspended); "
                          "no file of the script's was changed"}


def smooth(curve: Sequence[Tuple[float, float]], half_width: float = SMOOTH_DECADES) -> List[float]:
    """A centred moving average in log-lr (no lag, unlike an EMA): each point's loss is the
    mean of the finite losses within `half_width` decades of it."""
    logs = [math.log10(lr) for lr, _ in curve]
    out = []
    for x in logs:
        near = [l for (lx, (_, l)) in zip(logs, curve) if abs(lx - x) <= half_width + 1e-12 and math.isfinite(l)]
        out.append(sum(near) / len(near) if near else math.nan)
    return out


def analyse(curve: Sequence[Tuple[float, float]], configured: Optional[float],
            stopped_at: Optional[float] = None) -> LRReport:
    """The steepest-descent rate, the divergence rate and the verdict of a range-test curve."""
    curve = [(float(lr), float(l)) for lr, l in curve if lr > 0]
    notes: List[str] = []
    if len(curve) < MIN_POINTS:
        return LRReport(configured, None, None, "unknown",
                        f"only {len(curve)} loss(es) measured: the run took too few optimizer steps", curve,
                        [], notes=notes)
    s = smooth(curve)
    lrs = [lr for lr, _ in curve]
    finite = [i for i, v in enumerate(s) if math.isfinite(v)]
    start = s[finite[0]]
    i_min = min(finite, key=lambda i: s[i])
    sigma = _noise(curve, s)
    # divergence: past the minimum, the first rate whose smoothed loss is clearly (NOISE_SIGMAS
    # noise levels) worse than the loss the sweep started from, or not finite; else where the
    # run was stopped for it
    diverge = next((lrs[i] for i in range(i_min + 1, len(curve))
                    if not math.isfinite(curve[i][1]) or not math.isfinite(s[i])
                    or s[i] > start + NOISE_SIGMAS * sigma), stopped_at)
    if start - s[i_min] <= NOISE_SIGMAS * sigma:
        notes.append(f"the smoothed loss fell by {start - s[i_min]:.3g}, within {NOISE_SIGMAS:g}x the noise of "
                     f"single losses ({sigma:.3g}): the sweep is too short to see this script learn (raise --steps)")
        if configured and diverge is not None and configured >= diverge / TOO_HIGH_FACTOR:
            return LRReport(configured, None, diverge, *_verdict(configured, math.nan, (math.nan, math.nan), diverge),
                            curve, list(zip(lrs, s)), notes=notes)
        return LRReport(configured, None, diverge, "unknown", "the loss did not fall clearly during the sweep",
                        curve, list(zip(lrs, s)), notes=notes)
    # the slope of the smoothed loss per decade over SLOPE_DECADES (one noisy step cannot make
    # a steep slope), up to the minimum
    slopes: List[Tuple[float, float]] = []
    for a in finite:
        b = next((j for j in finite if j > a and math.log10(lrs[j] / lrs[a]) >= SLOPE_DECADES - 1e-9), None)
        if b is None or b > i_min:
            break
        dx = math.log10(lrs[b] / lrs[a])
        slopes.append((math.sqrt(lrs[a] * lrs[b]), (s[b] - s[a]) / dx))
    steepest = min(slopes, key=lambda t: t[1]) if slopes else None
    if steepest is None or steepest[1] >= 0:
        verdict_text = "the loss never fell during the sweep"
        return LRReport(configured, None, diverge, "unknown", verdict_text, curve, list(zip(lrs, s)), notes=notes)
    region_lrs = [lr for lr, d in slopes if d <= REGION_SLOPE * steepest[1]]
    region = (min(region_lrs), max(region_lrs))
    if diverge is None:
        notes.append(f"the loss did not diverge up to lr {lrs[-1]:.3g}: raise --max or --steps to find where it does")
    verdict, reason = _verdict(configured, steepest[0], region, diverge)
    return LRReport(configured, steepest[0], diverge, verdict, reason, curve, list(zip(lrs, s)), region, notes)


def _noise(curve: Sequence[Tuple[float, float]], s: Sequence[float]) -> float:
    """The noise of single losses: the robust spread (median absolute deviation, scaled to a
    standard deviation) of the losses around the smoothed curve (the median ignores the few
    large deviations where the loss turns)."""
    res = sorted(abs(l - v) for (_, l), v in zip(curve, s) if math.isfinite(l) and math.isfinite(v))
    return 1.4826 * res[len(res) // 2] if len(res) >= MIN_POINTS else 0.0


def _verdict(configured: Optional[float], steepest: float, region: Tuple[float, float],
             diverge: Optional[float]) -> Tuple[str, str]:
    if configured is None or configured <= 0:
        return "unknown", "the script's configured learning rate is unknown"
    if diverge is not None and configured >= diverge / TOO_HIGH_FACTOR:
        where = "above" if configured >= diverge else "within a factor {:.2g} of".format(TOO_HIGH_FACTOR)
        return "too_high", f"the configured lr {configured:.3g} is {where} the divergence lr {diverge:.3g}"
    if configured < steepest / TOO_LOW_FACTOR:
        return "too_low", (f"the configured lr {configured:.3g} is more than {TOO_LOW_FACTOR:g}x below the "
                           f"steepest descent at {steepest:.3g}")
    return "ok", (f"the configured lr {configured:.3g} is below the divergence region"
                  + (f" ({diverge:.3g})" if diverge is not None else "")
                  + f" and not far below the steepest-descent region {region[0]:.3g}-{region[1]:.3g}")
