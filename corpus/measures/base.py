"""The measurement registry (`measure`, `run_measure`), its Finding, and the helpers the
measurements share."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Tuple

import torch

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


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def matching(run: Run, pattern: str) -> List[Tuple[str, torch.nn.Parameter]]:
    rx = re.compile(pattern)
    params = [(n, p) for n, p in run.model.named_parameters() if rx.search(n)]
    if not params:
        raise ValueError(f"no parameter of {run.script}'s model matches {pattern!r}")
    return params


def weighted(items: Iterable[Tuple[torch.Tensor, bool]]) -> float:
    """Fraction of elements whose flag is set."""
    items = list(items)
    total = sum(t.numel() for t, _ in items)
    return sum(t.numel() for t, flag in items if flag) / total if total else float("nan")


def train_calls(run: Run):
    return [c for c in run.model_calls() if not c.is_eval]
