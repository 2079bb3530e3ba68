"""Symptom measurements: what a bug variant's run shows, against its case's reference run.

Each measurement is a function `(bug: Run, ref: Run, **args) -> Finding` registered under
the name a variant's `measure:` list in case.yaml uses (base.py), by subject: parameters
and the optimizer (params.py), data and loss (data.py), schedule and modes (schedule.py).
Values are computed from the runs (parameters, gradients, probe records, loaders), never
read from metadata; most also measure the reference, which must not show the symptom.
"""
from corpus.measures import data, params, schedule  # noqa: F401 — registers the measurements
from corpus.measures.base import MEASURES, Finding, run_measure

__all__ = ["MEASURES", "Finding", "run_measure"]
