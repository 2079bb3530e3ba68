"""The DataLoaders of a traced run: which one is being consumed, which drives optimizer steps
(train) and which only evaluates, and the dataset-level observations made once per loader:
train/eval overlap and dataset statistics (docs/observations.md, `data.*`)."""
from __future__ import annotations

import weakref
from typing import Dict, Optional, Set

import torch
from torch.utils.data import DataLoader

from tracer import data as datamod
from tracer import stats
from tracer.pending import Pending


class LoaderTracker:
    """Loaders by id (weakly held), their roles, and which have been examined."""

    def __init__(self) -> None:
        self.loaders: "weakref.WeakValueDictionary[int, DataLoader]" = weakref.WeakValueDictionary()
        self.roles: Dict[int, str] = {}
        self.current_id: Optional[int] = None  # the loader whose batch was fetched last
        self._examined: Set[int] = set()
        self._train_peek: Optional[stats.Stats] = None  # the train dataset's statistics
        self.train_classes: Optional[int] = None  # distinct labels of the train dataset

    def register(self, loader: DataLoader) -> None:
        self.loaders[id(loader)] = loader

    def iterated(self, loader: DataLoader, it: object) -> None:
        self.loaders[id(loader)] = loader
        setattr(it, "_invar_loader", id(loader))
        self.current_id = id(loader)

    def current(self) -> Optional[DataLoader]:
        return self.loaders.get(self.current_id) if self.current_id is not None else None

    def current_role(self) -> Optional[str]:
        return self.roles.get(self.current_id) if self.current_id is not None else None

    def has_train(self) -> bool:
        return "train" in self.roles.values()

    def examine(self, p: Pending, step: int, train: DataLoader) -> None:
        """Overlap and dataset statistics of the train loader vs every other loader."""
        if id(train) not in self._examined:
            self._examined.add(id(train))
            self._peek(p, step, train, "train")
        for other in list(self.loaders.values()):
            if other is train or id(other) in self._examined or self.roles.get(id(other)) == "train":
                continue
            self._examined.add(id(other))
            ov = datamod.overlap(train.dataset, other.dataset)
            p.value(step, "eval", "data.overlap", ov.count)
            p.value(step, "eval", "data.overlap_fraction", ov.count / max(1, ov.eval_size))
            self._peek(p, step, other, "eval")

    def examine_late(self, p: Pending, step: int) -> None:
        """An eval loader created after the first step is examined when first used."""
        cur = self.current_id
        if cur is None or cur in self._examined:
            return
        train = next((self.loaders.get(i) for i, r in self.roles.items() if r == "train"
                      and self.loaders.get(i) is not None), None)
        if train is not None:
            self.examine(p, step, train)

    def _peek(self, p: Pending, step: int, loader: DataLoader, role: str) -> None:
        pk = datamod.peek(loader.dataset)
        if pk.inputs is not None and pk.inputs.is_floating_point():
            st = stats.input_stats(pk.inputs)
            p.stats(step, role, f"data.{role}.", st)
            if role == "train":
                self._train_peek = st
            elif self._train_peek is not None:
                p.stats(step, role, f"data.{role}.", stats.relative_stats(self._train_peek, st))
        if pk.labels is not None and not pk.labels.is_floating_point() and pk.labels.numel():
            classes = int(torch.unique(pk.labels).numel())
            if pk.labels_exact:  # a few samples' labels would understate the largest class
                p.value(step, role, f"data.{role}.label_max", int(pk.labels.max()))
                p.value(step, role, f"data.{role}.classes", classes)
            if role == "train":
                self.train_classes = classes
