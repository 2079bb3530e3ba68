"""invar's own errors: one root, `InvarError`, for every problem the user can fix.

Each layer raises the subclass that says what went wrong (a malformed invariant file, a
missing script, a store that cannot be written); the command line maps exception classes
to exit codes in one table (invariants/app/cli/common.py), so a new error class is a new
row there, never a new `except` clause. Anything that is not an `InvarError` is a bug in
invar and is reported as one.
"""
from __future__ import annotations


class InvarError(Exception):
    """A problem the user can fix; its message is printed as one line, no traceback."""


class UsageError(InvarError):
    """Bad command-line usage: an option out of range, options that exclude each other."""
