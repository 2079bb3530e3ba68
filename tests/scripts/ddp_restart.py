"""ddp_faults.py's DDP loop under a torchrun that restarts (--max-restarts): in the first
attempt (TORCHELASTIC_RESTART_COUNT 0) rank 1 raises at step 5; the restart runs clean."""
import os
import runpy
import sys
from pathlib import Path

if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    sys.argv += ["--fail-rank", "1", "--fail-at", "5"]
runpy.run_path(str(Path(__file__).with_name("ddp_faults.py")), run_name="__main__")
