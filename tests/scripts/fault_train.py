"""A small training script that ends (or misbehaves) the ways real launchers and frameworks
do, for the fault-injection tests (tests/e2e/test_faults.py). Plain PyTorch.

--end how the script ends after --at optimizer steps (or after training, when --at is
      past --steps): `return` (normally), `sys-exit` (sys.exit(--code)), `os-exit`
      (os._exit(--code)), `raise`, `keyboard-interrupt`, `sigterm` / `sigkill` / `sigint`
      (the signal sent to itself), `hang` (sleeps).
--freeze         the head frozen (requires_grad=False): an error-level silent bug
--no-step        never steps the optimizer (forward and backward only)
--chdir DIR      os.chdir(DIR) before training
--dtype float64  torch.set_default_dtype, as some scripts do globally (the dtype found
                 at the start is printed: a process that ran the script before shows it)
--ready FILE     touch FILE after the first step (a test's cue to send a signal)
"""
import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--end", default="return")
    ap.add_argument("--at", type=int, default=6)
    ap.add_argument("--code", type=int, default=0)
    ap.add_argument("--freeze", action="store_true")
    ap.add_argument("--no-step", action="store_true")
    ap.add_argument("--chdir", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--ready", default=None)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    print(f"start: default dtype {torch.get_default_dtype()}")
    if args.chdir:
        os.chdir(args.chdir)
    if args.dtype:
        torch.set_default_dtype(getattr(torch, args.dtype))
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    if args.freeze:
        for p in model[2].parameters():
            p.requires_grad = False
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(args.steps):
        if step == args.at:
            end(args.end, args.code)
        xb, yb = x[step * 16 % 256:][:16], y[step * 16 % 256:][:16]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        if not args.no_step:
            opt.step()
        if step == 0 and args.ready:
            Path(args.ready).touch()
    print(f"done: loss {loss.item():.3f}")
    if args.at >= args.steps:
        end(args.end, args.code)


def end(how: str, code: int) -> None:
    sys.stdout.flush()
    if how == "sys-exit":
        sys.exit(code)
    if how == "os-exit":
        os._exit(code)
    if how == "raise":
        raise RuntimeError("the pipeline broke")
    if how == "keyboard-interrupt":
        raise KeyboardInterrupt
    if how in ("sigterm", "sigkill", "sigint"):
        os.kill(os.getpid(), getattr(signal, how.upper()))
        time.sleep(30)
    if how == "hang":
        time.sleep(600)


if __name__ == "__main__":
    main()
