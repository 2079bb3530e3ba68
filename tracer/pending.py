"""Observations of one flush: tensors gathered with one transfer, rows built afterwards.

A row is the tuple (step, phase, variable, value, text): the fields, in order, of
`invariants.observation.Observation`, which the application reads them as. The tracer
builds plain tuples because it imports nothing of `invariants`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from tracer.stats import Stats

Row = Tuple[int, str, str, Optional[float], Optional[str]]


class Pending:
    """Statistics of one flush: tensors gathered with one transfer, rows built afterwards."""

    def __init__(self) -> None:
        self.parts: List[torch.Tensor] = []
        self.builders: List[Tuple[int, Callable[[List[float]], List[Row]]]] = []
        self.rows: List[Row] = []

    def tensor(self, t: torch.Tensor, build: Callable[[List[float]], List[Row]]) -> None:
        flat = t.detach().reshape(-1).float()
        self.parts.append(flat)
        self.builders.append((flat.numel(), build))

    def stats(self, step: int, phase: str, prefix: str, st: Optional[Stats]) -> None:
        if st is None or not st[0]:
            return
        names, t = st
        self.tensor(t, lambda v: [row(step, phase, prefix + n, x) for n, x in zip(names, v)])

    def value(self, step: int, phase: str, variable: str, value: Any) -> None:
        self.rows.append(row(step, phase, variable, value))

    def empty(self) -> bool:
        return not (self.parts or self.rows)

    def absorb(self, other: "Pending", phase: Optional[str] = None) -> None:
        """Takes over `other`'s observations (leaving it empty); with `phase`, relabelled
        (which resolves them: one transfer)."""
        if other.empty():
            return
        if phase is None:
            self.parts += other.parts
            self.builders += other.builders
            self.rows += other.rows
            other.parts, other.builders, other.rows = [], [], []
        else:
            self.rows += [(s, phase, v, x, t) for s, _, v, x, t in other.resolve()]

    def resolve(self) -> List[Row]:
        rows = self.rows
        if self.parts:
            by_device: Dict[torch.device, List[int]] = {}
            for i, p in enumerate(self.parts):
                by_device.setdefault(p.device, []).append(i)
            values: List[List[float]] = [[] for _ in self.parts]
            for idx in by_device.values():
                flat = torch.cat([self.parts[i] for i in idx]).cpu().tolist()
                pos = 0
                for i in idx:
                    n = self.parts[i].numel()
                    values[i] = flat[pos:pos + n]
                    pos += n
            for (n, build), v in zip(self.builders, values):
                rows.extend(build(v))
        self.parts, self.builders, self.rows = [], [], []
        return rows


def row(step: int, phase: str, variable: str, value: Any) -> Row:
    if isinstance(value, bool):
        value = float(value)
    if isinstance(value, (int, float)):
        v = float(value)
        if v != v or v in (float("inf"), float("-inf")):
            return (step, phase, variable, None, str(v))
        return (step, phase, variable, v, None)
    return (step, phase, variable, None, None if value is None else str(value))
