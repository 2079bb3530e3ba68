"""Typed answers of the solver: never a bare bool that would hide 'unknown'."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Union


@dataclass(frozen=True)
class Proved:
    """The property holds for every value the symbols may take."""

    what: str
    note: str = ""  # e.g. a guard a concrete forward showed to be a symbolic-path artefact

    status = "proved"

    def __str__(self) -> str:
        return f"proved: {self.what}" + (f" (note: {self.note})" if self.note else "")


@dataclass(frozen=True)
class Counterexample:
    """The property fails; `model` assigns the symbols a failing value."""

    what: str
    model: Dict[str, int] = field(default_factory=dict)

    status = "counterexample"

    def __str__(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in sorted(self.model.items()))
        return f"counterexample: {self.what}" + (f" ({values})" if values else "")


@dataclass(frozen=True)
class Unknown:
    """The solver could not decide; `reason` names the op, module or limit responsible."""

    reason: str

    status = "unknown"

    def __str__(self) -> str:
        return f"unknown: {self.reason}"


Result = Union[Proved, Counterexample, Unknown]
