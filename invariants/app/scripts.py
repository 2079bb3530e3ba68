"""The user's training script, checked before anything runs it."""
from __future__ import annotations

import os
from pathlib import Path

from invariants.errors import InvarError


class ScriptError(InvarError):
    """The script cannot be run at all."""


class ScriptMissing(ScriptError):
    """No such script, or it cannot be read as UTF-8 text."""


class ScriptSyntax(ScriptError):
    """The script is not valid Python."""


def check_script(path: str | os.PathLike) -> Path:
    """The resolved script path; ScriptMissing or ScriptSyntax when it cannot be run."""
    p = Path(path)
    if not p.is_file():
        raise ScriptMissing(f"no such script: {path}")
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScriptMissing(f"cannot read {path}: {e}") from e
    try:
        compile(source, str(p), "exec")
    except SyntaxError as e:
        raise ScriptSyntax(f"{path}:{e.lineno}: SyntaxError: {e.msg}") from e
    return p.resolve()
