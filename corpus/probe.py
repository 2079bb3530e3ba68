"""Runs one corpus script in this process and measures what it did, with torch hooks only.

`run_script` imports the script file, calls its `main(argv)` with `SEED` set as asked and
its folder on `sys.path` (so `common.py` imports work), and records through global module
and optimizer hooks: every top-level model call (mode, input shape and per-channel
statistics, output scale), every optimizer step (time, learning rate, gradient norm, which
parameters had a gradient), the parameters as they were before the first call, ReLU dead
fractions and loss-module input shapes. The verifier computes symptoms from these records;
nothing here knows a case.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.optim import optimizer as optimizer_hooks

GRAD_STEPS = 100  # optimizer steps whose gradients are inspected (cost bound)


@dataclass
class Call:
    """One top-level call of a module that holds parameters (the model, usually)."""

    module: int
    step: int                   # optimizer steps completed before the call
    training: bool
    grad_enabled: bool
    shape: Tuple[int, ...]
    channel_mean: Optional[List[float]] = None
    channel_std: Optional[List[float]] = None
    out_shape: Tuple[int, ...] = ()
    out_std: float = float("nan")
    rows_sum_to_one: bool = False

    @property
    def is_eval(self) -> bool:
        return not self.training or not self.grad_enabled


@dataclass
class Step:
    """One optimizer step."""

    end: float                  # perf_counter at the end of the step
    lr_max: float
    grad_norm: float


@dataclass
class Probe:
    """Global hooks recording one script run; use as a context manager."""

    calls: List[Call] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)
    loss_shapes: List[Tuple[Tuple[int, ...], ...]] = field(default_factory=list)
    loss_labels: List[Tuple[bool, int]] = field(default_factory=list)  # (grad enabled, distinct labels)
    optimizers: List[torch.optim.Optimizer] = field(default_factory=list)
    snapshots: Dict[int, Dict[str, torch.Tensor]] = field(default_factory=dict)
    first_eval: Dict[int, Tuple[torch.Tensor, Dict[str, bool]]] = field(default_factory=dict)
    grad_seen: set = field(default_factory=set)          # ids of params that had a nonzero grad
    # a script without torch.optim (its own updates): cosine between consecutive updates,
    # the parameters' changes between consecutive top-level training calls of the model
    grad_cosines: List[float] = field(default_factory=list)
    dead: Dict[int, List[Tuple[int, float]]] = field(default_factory=dict)  # ReLU id -> (step, fraction)
    faults: List[str] = field(default_factory=list)   # errors of the probe itself
    start: float = 0.0

    def __post_init__(self) -> None:
        self._stack: List[Tuple[nn.Module, Optional[Call]]] = []
        self._handles: List[Any] = []

    def __enter__(self) -> "Probe":
        self.start = time.perf_counter()
        self._handles = [
            module_hooks.register_module_forward_pre_hook(self._guard(self._pre)),
            module_hooks.register_module_forward_hook(self._guard(self._post)),
            optimizer_hooks.register_optimizer_step_pre_hook(self._guard(self._step_pre)),
            optimizer_hooks.register_optimizer_step_post_hook(self._guard(self._step_post)),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _guard(self, hook: Any) -> Any:
        """A probe error is recorded (and fails the verification), never raised into the script."""
        def guarded(*args: Any) -> None:
            if torch.compiler.is_compiling():  # nothing of the probe inside a compiled graph
                return
            try:
                hook(*args)
            except Exception as e:  # noqa: BLE001 - reported as a probe fault
                if len(self.faults) < 5:
                    self.faults.append(f"{hook.__name__}: {type(e).__name__}: {e}")
        return guarded

    # -- module calls
    def _pre(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        call = None
        if not self._stack:
            has_params = next(module.parameters(), None) is not None
            if has_params:
                call = self._record_call(module, args)
            elif type(module).__name__.endswith("Loss"):
                self.loss_shapes.append(tuple(tuple(a.shape) for a in args if torch.is_tensor(a)))
                target = args[1] if len(args) > 1 else None
                if torch.is_tensor(target) and not target.is_floating_point() and target.numel():
                    self.loss_labels.append((torch.is_grad_enabled(), int(torch.unique(target).numel())))
        self._stack.append((module, call))

    def _post(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        if not self._stack or self._stack[-1][0] is not module:
            return
        _, call = self._stack.pop()
        training = torch.is_grad_enabled() and module.training
        with torch.no_grad():
            if call is not None and torch.is_tensor(output) and output.is_floating_point():
                call.out_shape = tuple(output.shape)
                call.out_std = float(output.float().std()) if output.numel() > 1 else 0.0
                if output.dim() == 2 and len(output):
                    call.rows_sum_to_one = bool((output >= 0).all()) and bool(
                        (output.sum(1) - 1).abs().max() < 1e-3)
            elif isinstance(module, (nn.ReLU, nn.ReLU6)) and training:
                out = output.detach()
                if out.dim() >= 2:
                    reduce = [d for d in range(out.dim()) if d != 1]
                    fraction = float((out <= 0).all(dim=reduce).float().mean())
                    self.dead.setdefault(id(module), []).append((len(self.steps), fraction))

    def _record_update_direction(self, module: nn.Module) -> None:
        # the parameters' change since the previous training call is the update applied in
        # between, whoever applied it (module hooks see no optimizer-free update itself)
        if self.optimizers or len(self.grad_cosines) >= GRAD_STEPS:
            return
        flat = torch.cat([q.detach().reshape(-1).float() for q in module.parameters()])
        previous, self._last_params = getattr(self, "_last_params", None), flat.clone()
        if previous is None or previous.numel() != flat.numel():
            return
        delta, last = flat - previous, getattr(self, "_last_delta", None)
        self._last_delta = delta
        if last is not None:
            denom = float(last.norm() * delta.norm())
            self.grad_cosines.append(float(last @ delta) / denom if denom > 0 else float("nan"))

    def _record_call(self, module: nn.Module, args: Tuple[Any, ...]) -> Call:
        # a torch.compile wrapper stands for the model it compiles (the one main() returns)
        module = getattr(module, "_orig_mod", module) if type(module).__name__ == "OptimizedModule" else module
        x = next((a for a in args if torch.is_tensor(a)), None)
        call = Call(module=id(module), step=len(self.steps), training=module.training,
                    grad_enabled=torch.is_grad_enabled(), shape=tuple(x.shape) if x is not None else ())
        with torch.no_grad():
            if call.training and call.grad_enabled:
                self._record_update_direction(module)
            if x is not None and x.is_floating_point() and x.dim() >= 3:
                dims = [0] + list(range(2, x.dim()))
                ch = x[:, :4].float()
                call.channel_mean = ch.mean(dim=dims).tolist()
                call.channel_std = ch.std(dim=dims).tolist()
            if id(module) not in self.snapshots:
                self.snapshots[id(module)] = {k: v.detach().clone() for k, v in
                                              list(module.named_parameters()) + list(module.named_buffers())}
            if call.is_eval and id(module) not in self.first_eval and x is not None:
                modes = {name: m.training for name, m in module.named_modules()}
                self.first_eval[id(module)] = (x.detach().clone(), modes)
        self.calls.append(call)
        return call

    # -- optimizer steps
    def _step_pre(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not any(o is opt for o in self.optimizers):
            self.optimizers.append(opt)
        norm = float("nan")
        if len(self.steps) < GRAD_STEPS:
            total = 0.0
            with torch.no_grad():
                for group in opt.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            sq = float(p.grad.float().pow(2).sum())
                            total += sq
                            if sq > 0:
                                self.grad_seen.add(id(p))
            norm = math.sqrt(total)
        lr = max(float(g.get("lr", 0.0)) for g in opt.param_groups)
        self._pending = (lr, norm)

    def _step_post(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        lr, norm = getattr(self, "_pending", (float("nan"), float("nan")))
        self.steps.append(Step(end=time.perf_counter(), lr_max=lr, grad_norm=norm))


@dataclass
class Run:
    """One script run: what it returned, printed and raised, and what the probe saw."""

    script: str
    seed: Optional[int]
    probe: Probe
    result: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    stdout: str = ""
    metrics_line: Optional[Dict[str, Any]] = None
    seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)
    retried: Optional[str] = None   # the first attempt's error, when the verifier ran it twice

    @property
    def model(self) -> Optional[nn.Module]:
        model = (self.result or {}).get("model")
        return model if isinstance(model, nn.Module) else None

    @property
    def metrics(self) -> Dict[str, Any]:
        return dict((self.result or {}).get("metrics") or {})

    def model_calls(self) -> List[Call]:
        """Top-level calls of the returned model."""
        root = id(self.model) if self.model is not None else None
        return [c for c in self.probe.calls if c.module == root]

    def seconds_to_step(self, k: int) -> Optional[float]:
        """Seconds from the call of main() to the end of optimizer step k (1-based)."""
        if len(self.probe.steps) < k:
            return None
        return self.probe.steps[k - 1].end - self.probe.start

    def step_seconds(self) -> float:
        """Seconds of the fastest gap between consecutive optimizer steps: the step's own
        cost, least disturbed by eval passes and by other processes on shared cores."""
        ends = [s.end for s in self.probe.steps]
        return min((b - a for a, b in zip(ends, ends[1:])), default=float("nan"))

    def first_eval_step(self) -> Optional[int]:
        """Optimizer steps completed before the model's first evaluation call."""
        return next((c.step for c in self.model_calls() if c.is_eval), None)


def run_script(path: Path, args: Sequence[str] = (), seed: Optional[int] = None) -> Run:
    """Imports `path` and calls its main(args) under a Probe; never raises for script errors."""
    case_dir = str(path.parent.resolve())
    saved = (sys.path[:], sys.argv[:], os.environ.get("SEED"), set(sys.modules))
    sys.path.insert(0, case_dir)
    sys.argv = [str(path)] + list(args)
    if seed is None:
        os.environ.pop("SEED", None)
    else:
        os.environ["SEED"] = str(seed)
    out = io.StringIO()
    run = Run(script=path.name, seed=seed, probe=Probe())
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                _child_stdout_discarded():
            warnings.simplefilter("always")
            with run.probe:
                name = f"_corpus_{path.parent.name}_{path.stem}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                result = module.main(list(args))
                run.seconds = time.perf_counter() - run.probe.start
        run.result = result if isinstance(result, dict) else {"returned": result}
        run.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    except BaseException as e:  # a script that crashes is a finding, not a verifier error
        if isinstance(e, KeyboardInterrupt):
            raise
        run.error = "".join(traceback.format_exception_only(type(e), e)).strip()
        run.stdout = out.getvalue() + "\n" + traceback.format_exc()
    finally:
        sys.path[:], sys.argv[:] = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("SEED", None)
        else:
            os.environ["SEED"] = saved[2]
        for name in set(sys.modules) - saved[3]:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith(case_dir):
                del sys.modules[name]
    if run.error is None:
        run.stdout = out.getvalue()
        run.metrics_line = _metrics_line(run.stdout)
    return run


@contextlib.contextmanager
def _child_stdout_discarded() -> Iterator[None]:
    """Points file descriptor 1 at /dev/null, so that processes a script spawns (and C code)
    do not print into the verifier's table."""
    try:
        saved = os.dup(1)
    except OSError:  # no usable fd 1
        yield
        return
    if sys.__stdout__ is not None:
        sys.__stdout__.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _metrics_line(stdout: str) -> Optional[Dict[str, Any]]:
    """The JSON of the last `METRICS {...}` line, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("METRICS "):
            try:
                value = json.loads(line[len("METRICS "):])
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None
