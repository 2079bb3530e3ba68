"""invar's static half: shape questions answered with z3 over torch's symbolic shapes.

z3 is imported lazily, only in solver/z3query.py. Nothing here knows about invariants.
"""
from typing import Any, Sequence

from solver.analyse import Probe, ShapeReport, analyse, prepool_stage
from solver.results import Counterexample, Proved, Result, Unknown


def broadcast_check(shape_a: Sequence[Any], shape_b: Sequence[Any]) -> Result:
    """Whether two shapes (ints or symbol names such as "B") broadcast to a shape with more
    elements than either ([B, 1] against [B] gives [B, B]): Counterexample with a B that
    does, Proved when none does."""
    from solver import z3query
    return z3query.broadcast(list(shape_a), list(shape_b))


__all__ = ["analyse", "broadcast_check", "prepool_stage", "ShapeReport", "Probe", "Proved",
           "Counterexample", "Unknown", "Result"]
