"""The input shifts of `invar probe robustness`, defined in the data's original scale (what
the loader yields, before the script's normalisation), and the per-channel affine map the
probe measures between that scale and what the model gets (docs/probes.md).

A shift takes a batch in the original scale, its data range (lo, hi) and a generator (the
script's random streams are never used) and returns the shifted batch, clamped to the range:
* brightness=v: every value times v (v=1: unchanged), as a camera exposure change;
* contrast=v: each sample's values pulled to (v<1) or pushed from (v>1) its own mean;
* noise=v: Gaussian noise whose standard deviation is v times the data range (hi - lo).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from invariants.errors import UsageError

DEFAULT_SHIFTS = ("brightness=0.5,1.5", "contrast=0.5", "noise=0.05")
MAX_MAP_ERROR = 0.05  # of the model-input range: how far an affine map may miss the range's ends


def _brightness(x: torch.Tensor, v: float, g: torch.Generator) -> torch.Tensor:
    return x * v


def _contrast(x: torch.Tensor, v: float, g: torch.Generator) -> torch.Tensor:
    mean = x.reshape(len(x), -1).mean(1).reshape((len(x),) + (1,) * (x.dim() - 1))
    return mean + (x - mean) * v


def _noise(x: torch.Tensor, v: float, g: torch.Generator, span: float = 1.0) -> torch.Tensor:
    return x + v * span * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)


SHIFTS: Dict[str, Callable[..., torch.Tensor]] = {"brightness": _brightness, "contrast": _contrast,
                                                  "noise": _noise}
IDENTITY = {"brightness": 1.0, "contrast": 1.0, "noise": 0.0}


def parse(specs: Sequence[str]) -> List[Tuple[str, float]]:
    """`brightness=0.5,1.5` ... as (name, value) pairs; UsageError naming a bad one."""
    out: List[Tuple[str, float]] = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip().lower()
        if not sep or name not in SHIFTS:
            raise UsageError(f"--shift takes NAME=V[,V...] with NAME one of {', '.join(SHIFTS)}, got {spec!r}")
        try:
            vals = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--shift {spec!r}: the values must be numbers") from None
        if not vals or any(not v == v or v < 0 for v in vals):  # v == v refuses nan
            raise UsageError(f"--shift {spec!r}: give one or more values >= 0")
        out.extend((name, v) for v in vals)
    return out


def apply(name: str, value: float, x: torch.Tensor, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    """The shifted batch in the original scale, clamped to the data range."""
    if name == "noise":
        y = _noise(x, value, g, span=hi - lo)
    else:
        y = SHIFTS[name](x, value, g)
    return y.clamp(lo, hi)


def channel_view(x: torch.Tensor) -> torch.Tensor:
    """(channels, values) of a batch: channels are dim 1 (image channels, or features)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() >= 2 else x.reshape(1, -1)


@dataclass
class AffineMap:
    """model input = scale * original + offset, per channel (dim 1)."""

    scale: torch.Tensor
    offset: torch.Tensor
    note: str

    def _shape(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(like.device, like.dtype).reshape((1, -1) + (1,) * (like.dim() - 2))

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._shape(self.scale, x) + self._shape(self.offset, x)

    def to_original(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._shape(self.offset, x)) / self._shape(self.scale, x)


def measure_map(original: Optional[torch.Tensor], model_in: torch.Tensor) -> AffineMap:
    """The per-channel affine map from the loader's samples (`original`) to the model's
    inputs, from their means and standard deviations; the identity (with a note saying why)
    when there is nothing to measure or the two do not correspond."""
    ch = model_in.shape[1] if model_in.dim() >= 2 else 1
    ident = torch.ones(ch), torch.zeros(ch)
    if original is None:
        return AffineMap(*ident, "the loader's samples could not be read: shifts are applied to the model's inputs")
    if original.shape[1:] != model_in.shape[1:]:
        return AffineMap(*ident, f"the loader's samples {tuple(original.shape[1:])} are not shaped like the model's "
                                 f"inputs {tuple(model_in.shape[1:])} (resized or cropped): shifts are applied to "
                                 f"the model's inputs")
    o, m = channel_view(original.double()), channel_view(model_in.double())
    so, sm = o.std(1), m.std(1)
    scale = torch.where(so > 0, sm / so.clamp_min(1e-12), torch.ones_like(so))
    offset = m.mean(1) - scale * o.mean(1)
    # an affine map sends the ends of the range to the ends of the range
    span = (m.amax(1) - m.amin(1)).clamp_min(1e-12)
    miss = torch.maximum((scale * o.amin(1) + offset - m.amin(1)).abs(),
                         (scale * o.amax(1) + offset - m.amax(1)).abs()) / span
    if len(original) == len(model_in) and float(miss.max()) > MAX_MAP_ERROR:
        return AffineMap(*ident, f"the script's transform is not a per-channel affine map (its range misses by "
                                 f"{float(miss.max()):.0%}): shifts are applied to the model's inputs")
    if torch.allclose(scale, torch.ones_like(scale), atol=1e-3) and offset.abs().max() < 1e-3:
        return AffineMap(scale.float(), offset.float(), "the model gets the loader's samples as they are")
    text = ", ".join(f"{float(s):.3g}x{float(b):+.3g}" for s, b in list(zip(scale, offset))[:4])
    more = "" if len(scale) <= 4 else f" (+{len(scale) - 4} channels)"
    return AffineMap(scale.float(), offset.float(),
                     f"measured normalisation (model input = scale x original + offset per channel): {text}{more}; "
                     f"shifts are applied before it")
