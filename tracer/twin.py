"""Model copies that analyses may run without the user noticing.

A static analysis (the solver's symbolic and concrete forwards, torch.export's fallback
graph) runs a model on fake tensors. It must not run on the user's model (BatchNorm
statistics, dropout's random numbers, parameters) and must not run *through the user's
hooks*: a global forward hook counting calls, or a hook registered on one module, would
see a forward that never happened. So an analysis runs a meta twin (a deep copy whose
parameters and buffers are meta tensors, their data never copied, without the user's
module hooks) inside `unseen()`: the global module hooks lifted, the forward's prints
swallowed.

Hooks torch itself installs as part of a module's computation (spectral_norm and
weight_norm recompute the weight in a forward pre-hook) stay on the twin: without them
it would compute something else.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import itertools
from typing import Any, Dict, Iterator

import torch
from torch import nn
from torch.nn.modules import module as module_globals

# torch.nn.modules.module's global hook tables (dicts; `_global_is_full_backward_hook` is a flag)
GLOBAL_HOOK_TABLES = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_with_kwargs",
                      "_global_forward_hooks_always_called", "_global_backward_pre_hooks",
                      "_global_backward_hooks", "_global_module_registration_hooks",
                      "_global_parameter_registration_hooks", "_global_buffer_registration_hooks")
# a module's own hook tables that call user code when it runs
MODULE_HOOK_TABLES = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                      "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_pre_hooks",
                      "_backward_hooks")


@contextlib.contextmanager
def no_global_hooks() -> Iterator[None]:
    """Runs the block with torch's global module hooks (the user's and the tracer's)
    lifted; they are put back as they were, and a hook registered inside is kept."""
    tables = [getattr(module_globals, name) for name in GLOBAL_HOOK_TABLES]
    saved = [dict(t) for t in tables]
    for t in tables:
        t.clear()
    try:
        yield
    finally:
        for table, old in zip(tables, saved):
            new = dict(table)
            table.clear()
            table.update(old)
            table.update(new)


@contextlib.contextmanager
def unseen() -> Iterator[None]:
    """Runs an analysis of the model invisibly: the global module hooks lifted and what the
    model's forward prints (a `print(x.shape)` sees proxies or fake tensors) swallowed."""
    with no_global_hooks(), contextlib.redirect_stdout(io.StringIO()):
        yield


def torch_own_hook(hook: Any) -> bool:
    """Whether a hook is part of torch's own computation of a module (spectral_norm,
    weight_norm, ...), not an observer someone registered."""
    fn = hook.func if isinstance(hook, functools.partial) else hook
    owner = getattr(fn, "__module__", None) or type(fn).__module__
    return isinstance(owner, str) and owner.startswith("torch.")


def strip_user_hooks(model: nn.Module) -> None:
    """Removes every module hook of `model` (a copy) that is not torch's own."""
    for m in model.modules():
        for table in MODULE_HOOK_TABLES:
            hooks: Dict[int, Any] = getattr(m, table, None) or {}
            for key in [k for k, h in hooks.items() if not torch_own_hook(h)]:
                del hooks[key]
                for flags in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                              "_forward_pre_hooks_with_kwargs"):
                    getattr(m, flags, {}).pop(key, None)


def meta_twin(model: nn.Module) -> nn.Module:
    """A meta-device copy of `model` in eval mode without the user's module hooks;
    parameters and buffers enter it as meta tensors (their data is never copied)."""
    memo: Dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if type(t) in (nn.Parameter, torch.Tensor) and id(t) not in memo:
            meta = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(meta, t.requires_grad) if type(t) is nn.Parameter else meta
    twin = copy.deepcopy(model, memo)
    strip_user_hooks(twin)
    return twin.to("meta").eval()

