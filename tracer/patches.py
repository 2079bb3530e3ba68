"""Reversible patches of torch entry points the tracer needs beyond torch's global hooks.

Each patch is installed inside a session's ExitStack and removed when it exits, error or
not; the wrappers call the original first-class and never change arguments or results.
While torch.compile compiles (dynamo's tracing, AOTAutograd, the backend), every wrapper
is the original alone: the compiled graph is the one an untraced run gets, and nothing of
the tracer runs inside it.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _BaseDataLoaderIter

# Functional losses (loss modules call these too, through `F.<name>`).
LOSS_FUNCTIONS = (
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div",
    "cosine_embedding_loss", "margin_ranking_loss", "multi_margin_loss",
)
CLASSIFICATION_LOSSES = {"cross_entropy", "nll_loss", "multi_margin_loss"}


_is_dynamo_compiling = torch.compiler.is_dynamo_compiling
_compiler = torch.compiler


def compiling() -> bool:
    """Whether torch.compile or torch.export is at work: dynamo tracing (which reads
    `is_dynamo_compiling()` as True and so never reads the flag: no guard on it), or the
    rest of a compile session (AOTAutograd retracing the graph, the backend), when torch
    sets `_is_compiling_flag`. Cheaper than `torch.compiler.is_compiling()`, which every
    module call of a traced run would pay for."""
    return _is_dynamo_compiling() or _compiler._is_compiling_flag


def _transparent_when_compiling(original: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    def traced(*args: Any, **kwargs: Any) -> Any:
        if compiling():
            return original(*args, **kwargs)
        return wrapper(*args, **kwargs)
    return traced


@contextlib.contextmanager
def patched(owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Replaces `owner.name` by `make(original)` for the duration of the block (the
    original alone while dynamo traces). An attribute a class only inherits (`Tensor.relu`
    lives on its C base) is shadowed on the class and the shadow removed afterwards."""
    inherited = isinstance(owner, type) and name not in owner.__dict__
    original = getattr(owner, name) if inherited or not isinstance(owner, type) else owner.__dict__[name]
    wrapper = _transparent_when_compiling(original, make(original))
    if callable(original) and not isinstance(original, (staticmethod, classmethod)):
        with contextlib.suppress(AttributeError, TypeError):
            functools.update_wrapper(wrapper, original)
    entry = (owner, name, original, wrapper, inherited)
    _ACTIVE.append(entry)
    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        _ACTIVE.remove(entry)
        _restore(owner, name, original, inherited)


def _restore(owner: Any, name: str, original: Any, inherited: bool) -> None:
    if inherited:
        if name in owner.__dict__:
            delattr(owner, name)
    else:
        setattr(owner, name, original)


# (owner, name, original, wrapper, inherited) of every patch in place, oldest first
_ACTIVE: List[Tuple[Any, str, Any, Any, bool]] = []


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """The originals back in place for the duration of the block (TorchScript compiles the
    source of what it finds: a wrapper taking *args cannot be scripted)."""
    entries = list(_ACTIVE)
    for owner, name, original, _, inherited in reversed(entries):
        _restore(owner, name, original, inherited)
    try:
        yield
    finally:
        for owner, name, _, wrapper, _ in entries:
            setattr(owner, name, wrapper)


def jit_patches(stack: contextlib.ExitStack) -> None:
    """torch.jit.script compiles with every patch suspended (scripted code is not observed)."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def script(*args: Any, **kwargs: Any) -> Any:
            with suspended():
                return original(*args, **kwargs)
        return script
    stack.enter_context(patched(torch.jit, "script", make))


def _constructed(on_created: Callable[[Any], None]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For `patched(cls, "__init__", ...)`: the original constructor, then `on_created(obj)`."""
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def __init__(self_: Any, *args: Any, **kwargs: Any) -> None:
            original(self_, *args, **kwargs)
            on_created(self_)
        return __init__
    return make


def optimizer_patches(stack: contextlib.ExitStack, on_created: Callable[[Any], None],
                      on_zero_grad: Callable[[], None]) -> None:
    """`on_created(optimizer)` once an optimizer is constructed; `on_zero_grad()` before
    every `zero_grad()` of an optimizer or a module."""
    def zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
        def zero_grad(self_: Any, *args: Any, **kwargs: Any) -> Any:
            on_zero_grad()
            return original(self_, *args, **kwargs)
        return zero_grad

    stack.enter_context(patched(torch.optim.Optimizer, "__init__", _constructed(on_created)))
    stack.enter_context(patched(torch.optim.Optimizer, "zero_grad", zero_grad))
    stack.enter_context(patched(nn.Module, "zero_grad", zero_grad))


def loader_patches(stack: contextlib.ExitStack, on_created: Callable[[Any], None],
                   on_pass: Callable[[Any, Any], None], on_fetch: Callable[[Any], None]) -> None:
    """`on_created(loader)` once a DataLoader is constructed, `on_pass(loader, iterator)`
    once `iter(loader)` returned, `on_fetch(iterator)` before each batch is fetched."""
    def iterate(original: Callable[..., Any]) -> Callable[..., Any]:
        def __iter__(self_: Any) -> Any:
            it = original(self_)
            on_pass(self_, it)
            return it
        return __iter__

    def fetch(original: Callable[..., Any]) -> Callable[..., Any]:
        def __next__(self_: Any) -> Any:
            on_fetch(self_)
            return original(self_)
        return __next__

    stack.enter_context(patched(DataLoader, "__init__", _constructed(on_created)))
    stack.enter_context(patched(DataLoader, "__iter__", iterate))
    stack.enter_context(patched(_BaseDataLoaderIter, "__next__", fetch))


def loss_patches(stack: contextlib.ExitStack, on_loss: Callable[[str, tuple, Any], None]) -> None:
    """Wraps every functional loss so `on_loss(name, (input, target), result)` sees it."""
    for name in LOSS_FUNCTIONS:
        if not hasattr(F, name):
            continue

        def make(original: Callable[..., Any], name: str = name) -> Callable[..., Any]:
            def loss(*args: Any, **kwargs: Any) -> Any:
                result = original(*args, **kwargs)
                pair = list(args[:2])
                for key in ("input", "target")[len(pair):]:
                    pair.append(kwargs.get(key))
                on_loss(name, tuple(pair), result)
                return result
            return loss

        stack.enter_context(patched(F, name, make))


# Functional dropouts (nn.Dropout modules call these too) and attention with dropout_p:
# name -> (position of p, position of the training flag or None when p alone decides).
DROPOUT_FUNCTIONS = {
    "dropout": (1, 2), "dropout1d": (1, 2), "dropout2d": (1, 2), "dropout3d": (1, 2),
    "alpha_dropout": (1, 2), "feature_alpha_dropout": (1, 2),
    "scaled_dot_product_attention": (4, None),
}
_DEFAULTS = {"p": 0.5, "training": True, "dropout_p": 0.0}


def dropout_patches(stack: contextlib.ExitStack, on_dropout: Callable[[], None]) -> None:
    """Wraps functional dropouts; `on_dropout()` runs when one actually drops (p > 0 and,
    where the function takes one, training=True)."""
    for name, (p_pos, train_pos) in DROPOUT_FUNCTIONS.items():
        if not hasattr(F, name):
            continue
        p_key = "dropout_p" if train_pos is None else "p"

        def make(original: Callable[..., Any], p_pos: int = p_pos, train_pos: Any = train_pos,
                 p_key: str = p_key) -> Callable[..., Any]:
            def dropout(*args: Any, **kwargs: Any) -> Any:
                p = args[p_pos] if len(args) > p_pos else kwargs.get(p_key, _DEFAULTS[p_key])
                training = True if train_pos is None else (
                    args[train_pos] if len(args) > train_pos else kwargs.get("training", True))
                if training and isinstance(p, (int, float)) and p > 0:
                    on_dropout()
                return original(*args, **kwargs)
            return dropout

        stack.enter_context(patched(F, name, make))


# Functional rectifiers: `F.relu` and `nn.ReLU` end in `torch.relu`/`torch.relu_`; `x.relu()`
# is a Tensor method. (owner, name) pairs; each call is reported once.
RELU_FUNCTIONS = ((torch, "relu"), (torch, "relu_"), (torch.Tensor, "relu"), (torch.Tensor, "relu_"))


def relu_patches(stack: contextlib.ExitStack, on_relu: Callable[[Any], None]) -> None:
    """Wraps the rectifier entry points; `on_relu(result)` sees every output tensor."""
    for owner, name in RELU_FUNCTIONS:
        if not hasattr(owner, name):
            continue

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def relu(*args: Any, **kwargs: Any) -> Any:
                result = original(*args, **kwargs)
                on_relu(result)
                return result
            return relu

        stack.enter_context(patched(owner, name, make))


# Gradient clipping by norm: the public name and the module it lives in (scripts call either).
CLIP_FUNCTIONS = ((torch.nn.utils, "clip_grad_norm_"), (torch.nn.utils.clip_grad, "clip_grad_norm_"))


def clip_patches(stack: contextlib.ExitStack, on_clip: Callable[[Any, Any], None]) -> None:
    """Wraps `clip_grad_norm_`; `on_clip(max_norm, total_norm)` sees each call's max_norm
    and the total norm it returned (the norm before clipping)."""
    for owner, name in CLIP_FUNCTIONS:
        if not hasattr(owner, name):
            continue

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def clip_grad_norm_(*args: Any, **kwargs: Any) -> Any:
                total = original(*args, **kwargs)
                on_clip(args[1] if len(args) > 1 else kwargs.get("max_norm"), total)
                return total
            return clip_grad_norm_

        stack.enter_context(patched(owner, name, make))


def backward_patches(stack: contextlib.ExitStack, on_start: Callable[[], None],
                     on_end: Callable[[Any], None]) -> None:
    """Wraps `Tensor.backward` and `torch.autograd.backward` (the first calls the second:
    only the outermost call counts); `on_start()` before a backward, `on_end(tensors)` after
    it returned, with the tensor(s) it was called on (the loss)."""
    depth = [0]

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def backward(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return original(*args, **kwargs)
            tensors = args[0] if args else kwargs.get("tensors", kwargs.get("self"))
            on_start()
            depth[0] += 1
            try:
                result = original(*args, **kwargs)
            finally:
                depth[0] -= 1
            on_end(tensors)
            return result
        return backward

    stack.enter_context(patched(torch.Tensor, "backward", make))
    stack.enter_context(patched(torch.autograd, "backward", make))
