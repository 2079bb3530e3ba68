"""Small observation tables shaped like the tracer's, for unit tests that mine and check
without running a script."""
from __future__ import annotations

from typing import Callable, Dict, List

from invariants.mine import mine
from invariants.model import InvariantSet
from invariants.observation import Observation

STEPS = 12


def reference_run(seed: int, **changes: Callable[[int], object]) -> List[Observation]:
    """One run of a small classifier as the tracer would record it; `changes` replaces a
    variable's value per step (a function of the step)."""
    def value(step: int) -> Dict[str, object]:
        return {
            "input.shape": "3x8x8", "input.side": 8.0, "input.mean": 0.01 * seed, "input.std": 1.0 + 0.01 * seed,
            "block.fc.params": 650.0, "block.fc.trainable_fraction": 1.0, "block.fc.no_grad_fraction": 0.0,
            "loss.value": 2.3 * 0.9 ** step + 0.01 * seed, "optim.lr_max": 0.1, "label.min": 0.0,
            "model.dropout_active": 1.0, "loss.class_width": 10.0, "label.classes_seen": 10.0,
        }

    rows = []
    for step in range(STEPS):
        values = value(step)
        for name, change in changes.items():
            values[name] = change(step)
        for name, v in values.items():
            rows.append(Observation(step, "train", name, None, v) if isinstance(v, str)
                        else Observation(step, "train", name, float(v), None))
    rows.append(Observation(0, "train", "data.train.mean", 0.5 + 0.001 * seed, None))  # read once per run
    return rows


def small_set(runs: int = 3, script: str = "train.py") -> InvariantSet:
    """The invariants mined from `runs` reference runs of the small classifier."""
    return mine([reference_run(seed) for seed in range(runs)], {"script": script, "steps": STEPS})[0]
