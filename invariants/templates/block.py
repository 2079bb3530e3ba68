"""Quantified templates over a block's parameters, and disjointness of data sets."""
from __future__ import annotations

from invariants.registry import Field, register


@register("all_none")
class AllNone:
    """A per-block fraction is 1 (`all`) or 0 (`none`): every trainable parameter gets a
    gradient, every trainable parameter is in the optimizer, no parameter is frozen."""

    ARITY = 1
    EXPECT = {"quantifier": Field((str,), doc="'all' (fraction == 1) or 'none' (== 0)")}


@register("disjoint")
class Disjoint:
    """Two data sets share no sample: the overlap count is 0."""

    ARITY = 1
    EXPECT = {}
