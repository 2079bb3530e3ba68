"""Partition a root model's parameters into blocks (module prefixes) for per-block variables."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Data-parallel wrappers are not a level either: their blocks are the wrapped model's.
WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)
ROOT_BLOCK = "_root"  # parameters registered directly on the root model

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.PReLU, nn.SELU, nn.CELU)
# Units of these can die (never positive); the others only get an output range.
RECTIFIERS = (nn.ReLU, nn.ReLU6)


@dataclass(frozen=True)
class BlockMap:
    """Blocks of a root model: name -> list of (parameter name, parameter)."""

    names: Tuple[str, ...]
    params: Dict[str, List[Tuple[str, nn.Parameter]]]


COMPILED_ATTRIBUTE = "_orig_mod"  # torch.compile's OptimizedModule holds the model it compiles here


def compiled_original(module: nn.Module) -> Optional[nn.Module]:
    """The model a `torch.compile` wrapper (OptimizedModule) compiles, else None. (No
    wrapper exists unless torch._dynamo was imported, so nothing is imported here.)"""
    frame = sys.modules.get("torch._dynamo.eval_frame")
    optimized = getattr(frame, "OptimizedModule", None)
    if optimized is not None and isinstance(module, optimized):
        inner = getattr(module, COMPILED_ATTRIBUTE, None)
        return inner if isinstance(inner, nn.Module) else None
    return None


def clean_name(name: str) -> str:
    """A module or parameter name without torch.compile's `_orig_mod` levels, so a compiled
    submodule's blocks are named as in the eager model (invariants transfer between both)."""
    if COMPILED_ATTRIBUTE not in name:
        return name
    return ".".join(part for part in name.split(".") if part != COMPILED_ATTRIBUTE)


def block_prefixes(root: nn.Module, depth: int = 1) -> List[str]:
    """Module prefixes at `depth` levels below the root, descending through containers.

    A child that is a Sequential/ModuleList/ModuleDict does not count as a level: its own
    children become blocks (`features.0`, `features.1`, ...), the way people name stages.
    """
    prefixes: List[str] = []

    def walk(module: nn.Module, prefix: str, level: int) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            inner = compiled_original(child)
            if inner is not None:  # a compiled submodule is named as the module it compiles
                child = inner
            if isinstance(child, CONTAINERS) and any(True for _ in child.children()):
                walk(child, full, level)
            elif level + 1 < depth and any(True for _ in child.children()):
                walk(child, full, level + 1)
            else:
                prefixes.append(full)

    if isinstance(root, WRAPPERS):
        walk(root.module, "module", 0)
    else:
        walk(root, "", 0)
    return prefixes


def block_map(root: nn.Module, depth: int = 1) -> BlockMap:
    """Assigns every parameter of `root` to its longest block prefix (or `_root`)."""
    prefixes = sorted(block_prefixes(root, depth), key=len, reverse=True)
    params: Dict[str, List[Tuple[str, nn.Parameter]]] = {}
    for name, p in root.named_parameters():
        name = clean_name(name)
        block = next((b for b in prefixes if name.startswith(b + ".")), ROOT_BLOCK)
        params.setdefault(block, []).append((name, p))
    order = [b for b in block_prefixes(root, depth) if b in params]
    if ROOT_BLOCK in params:
        order.append(ROOT_BLOCK)
    return BlockMap(names=tuple(order), params=params)


def numel(params: List[Tuple[str, torch.Tensor]]) -> int:
    return sum(p.numel() for _, p in params)
