"""One observation of a traced run: the unit everything after the tracer works on.

The tracer emits observations as plain tuples in this field order (it imports nothing of
`invariants`); the store writes and reads them, the miner fits templates to them, the
checker evaluates invariants on them and the rank merge reads them, all as `Observation`
(a NamedTuple, so a plain tuple in the same order is one too). docs/observations.md lists
the variables.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union


class Observation(NamedTuple):
    """A variable's value at an optimizer step and phase (train | eval).

    Numbers (booleans as 0/1) are in `value`; text, and numbers that are not finite (as
    `"nan"`, `"inf"`), are in `text`; at most one of the two is set."""

    step: int
    phase: str
    variable: str
    value: Optional[float]
    text: Optional[str]

    @property
    def observed(self) -> Union[float, str, None]:
        """The value as templates see it: the number, else the text."""
        return self.value if self.value is not None else self.text
