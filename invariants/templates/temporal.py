"""Templates over the course of a run: trend."""
from __future__ import annotations

from invariants.registry import NUMBER, Field, register


@register("trend")
class Trend:
    """The variable falls (or rises) over a step window by at least `min_change`."""

    ARITY = 1
    EXPECT = {
        "direction": Field((str,), doc="'decreasing' or 'increasing'"),
        "min_change": Field(NUMBER, doc="relative change between window start and end"),
    }
