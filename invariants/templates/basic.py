"""Single-variable templates: constant, one-of, range, magnitude."""
from __future__ import annotations

from invariants.registry import NUMBER, Field, register


@register("constant")
class Constant:
    """The variable takes one value in every observation (shape, dtype, parameter count)."""

    ARITY = 1
    EXPECT = {"value": Field(NUMBER + (str,), doc="the value every observation has")}


@register("one_of")
class OneOf:
    """The variable takes one of a few values."""

    ARITY = 1
    EXPECT = {"values": Field((list,), doc="the allowed values")}


@register("range")
class Range:
    """The variable stays within [min, max]; the margin comes from observed spread."""

    ARITY = 1
    EXPECT = {
        "min": Field(NUMBER, nullable=True, doc="lower bound (null: none)"),
        "max": Field(NUMBER, nullable=True, doc="upper bound (null: none)"),
    }


@register("magnitude")
class Magnitude:
    """The variable keeps its order of magnitude: within [min, max], bounds a decade wide."""

    ARITY = 1
    EXPECT = {
        "min": Field(NUMBER, doc="lower bound"),
        "max": Field(NUMBER, doc="upper bound"),
    }
