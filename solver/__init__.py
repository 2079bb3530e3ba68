"""invar's static half: shape questions answered with z3 over torch's symbolic shapes.

z3 is imported lazily, only in solver/z3query.py. Nothing here knows about invariants.
"""
from solver.analyse import Probe, ShapeReport, analyse, prepool_stage
from solver.results import Counterexample, Proved, Result, Unknown

__all__ = ["analyse", "prepool_stage", "ShapeReport", "Probe", "Proved", "Counterexample", "Unknown", "Result"]
