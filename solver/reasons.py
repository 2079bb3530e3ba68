"""Why an analysis could not run a model, in words a user acts on: never a torch
exception class name (`GuardOnDataDependentSymNode ... Eq(u0, 1)` tells a user nothing)."""
from __future__ import annotations

import re
from typing import Tuple


def undecidable() -> Tuple[type, ...]:
    """Exceptions that say the fake-tensor path lacks something, not that the sizes are wrong."""
    from torch._subclasses import fake_tensor as ft
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
    return (ft.DataDependentOutputException, ft.DynamicOutputShapeException, ft.UnsupportedOperatorException,
            ft.UnsupportedFakeTensorException, GuardOnDataDependentSymNode, NotImplementedError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""


def plain_reason(e: BaseException) -> str:
    """What went wrong when the model ran on fake tensors, in plain words."""
    from torch._subclasses import fake_tensor as ft
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
    if isinstance(e, GuardOnDataDependentSymNode):
        return ("the forward decides something on a value computed from the input's data (a Python `if`, "
                "`.item()` or `bool()` on a tensor), which an analysis without the data cannot follow")
    if isinstance(e, (ft.DataDependentOutputException, ft.DynamicOutputShapeException)):
        return ("an op whose output size depends on the input's data (nonzero, unique, boolean-mask "
                "indexing) cannot be sized without the data")
    if isinstance(e, ft.UnsupportedOperatorException):
        return f"the op {e.func if hasattr(e, 'func') else _first_line(e)} cannot run without real data"
    if isinstance(e, ft.UnsupportedFakeTensorException):
        return "the model uses a kind of tensor the analysis cannot stand in for"
    if isinstance(e, TypeError) and re.search(r"argument|positional|keyword", str(e)):
        return f"the forward was not called with the arguments it needs ({_first_line(e)})"
    if isinstance(e, NotImplementedError):
        return f"an op the model uses has no shape-only implementation ({_first_line(e) or 'not implemented'})"
    return _first_line(e) or "the forward failed without a message"
