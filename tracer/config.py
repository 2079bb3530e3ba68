"""What a traced run observes (TraceConfig) and the two ways the tracer ends a script.

Light on purpose (no torch): the application reads the options that shape variable names
(`naming_options`) to store them in an invariant file without loading the session.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

# Options that change which variables a run records and how they are named: invariants
# learned with one value name variables a run with another would not record.
NAMING_OPTIONS = ("block_depth",)


class StepBudgetReached(BaseException):
    """Ends the traced script after the requested number of optimizer steps.

    A BaseException so that a script's own `except Exception` cannot swallow it."""


class StopRequested(BaseException):
    """Ends the traced script because a listener or an extension asked (e.g. `check
    --fail-fast`, `invar shapes`)."""


@dataclass(frozen=True)
class TraceConfig:
    """What to observe and how densely."""

    steps: int = 0            # optimizer steps before the run is ended; 0: run to the end
    dense_steps: int = 50     # every step below this is observed ...
    sample_every: int = 10    # ... then every sample_every-th step
    eval_batches: int = 4     # eval batches observed per eval pass
    block_depth: int = 1      # module levels below the root that form blocks
    activations: bool = True  # dead-unit fraction and range per activation module
    detail_every: int = 5     # activation and update-ratio statistics every N-th observed step
    lift_hooks: bool = True   # no module hooks during unobserved training steps (faster)

    def naming_options(self) -> Dict[str, int]:
        """The options that shape variable names (NAMING_OPTIONS), by name."""
        return {name: getattr(self, name) for name in NAMING_OPTIONS}
