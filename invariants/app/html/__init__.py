"""HTML reports: a check's report (`invar check --format html`, `invar report`) and the review
document (`invar export --format html`), self-contained pages with plots drawn by
matplotlib, the optional extra `torch-invar[report]`.

Importing this package imports no plotting library; `require_matplotlib` says, before any
work is done, whether the extra is installed.
"""
from __future__ import annotations

import importlib.util

from invariants.errors import UsageError

EXTRA = "pip install 'torch-invar[report]'"


def require_matplotlib(what: str = "--format html") -> None:
    """UsageError (exit 2) naming the extra to install, when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"{what} draws its plots with matplotlib, which is not installed: {EXTRA} "
                         f"(or pip install matplotlib)")
