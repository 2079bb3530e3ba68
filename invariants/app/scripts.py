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
    try:  # a name from bytes that are not UTF-8 (surrogate escapes) cannot go into the store or a report
        str(p.resolve()).encode("utf-8")
    except UnicodeEncodeError:
        raise ScriptMissing(f"the script's path is not valid UTF-8 ({ascii(str(p.resolve()))}): rename the file "
                            f"or its folder") from None
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScriptMissing(f"cannot read {path}: {e}") from e
    try:
        compile(source, str(p), "exec")
    except SyntaxError as e:
        raise ScriptSyntax(f"{path}:{e.lineno}: SyntaxError: {e.msg}") from e
    return p.resolve()
