"""Two-variable templates: equality with an offset, ratio within bounds."""
from __future__ import annotations

from invariants.registry import NUMBER, Field, register


@register("equal")
class Equal:
    """target[0] - target[1] == offset at the same step (output width vs label classes)."""

    ARITY = 2
    EXPECT = {"offset": Field(NUMBER, doc="target[0] - target[1]")}


@register("ratio")
class Ratio:
    """target[0] / target[1] stays within [min, max] (eval vs train input statistics)."""

    ARITY = 2
    EXPECT = {
        "min": Field(NUMBER, doc="lower bound of the ratio"),
        "max": Field(NUMBER, doc="upper bound of the ratio"),
    }
