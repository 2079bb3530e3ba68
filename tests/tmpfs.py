"""Small tmpfs mounts for the store and output fault tests: a read-only place and a full
disk, as real as they come. Mounting needs root; elsewhere the tests that need one skip."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

LEFT_FREE = 4096  # bytes a "full" disk keeps: not even one SQLite page more


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """A fresh tmpfs of `size` at `where` (created), unmounted afterwards; skips the test
    when this process may not mount."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def make_read_only(where: Path) -> None:
    """Remounts the tmpfs at `where` read-only (root is refused writes there too)."""
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def fill(where: Path, leave: int = LEFT_FREE) -> None:
    """Fills the file system at `where` until `leave` bytes are free."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    with open(where / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - leave))
