"""The DataLoaders of a traced run: which one is being consumed, which drives optimizer steps
(train) and which only evaluates, and what they show: batch sizes (`loader.*`) and the
dataset-level observations made once per loader, train/eval overlap and dataset statistics
(docs/observations.md, `data.*`)."""
from __future__ import annotations

import weakref
from typing import Any, Dict, Optional, Set

import torch
from torch.utils.data import DataLoader

from tracer import data as datamod
from tracer import stats
from tracer.pending import Pending

LOADER_ATTRIBUTE = "_invar_loader"  # set on a loader's iterator: the id of its loader


class LoaderObserver:
    """Loaders by id (weakly held), their roles, the one whose batch was fetched last, and
    which have been examined."""

    def __init__(self) -> None:
        self._loaders: "weakref.WeakValueDictionary[int, DataLoader]" = weakref.WeakValueDictionary()
        self._roles: Dict[int, str] = {}
        self._current_id: Optional[int] = None  # the loader whose batch was fetched last
        self._examined: Set[int] = set()
        self._train_peek: Optional[stats.Stats] = None  # the train dataset's statistics
        self.train_classes: Optional[int] = None  # distinct labels of the train dataset

    # -- which loader is consumed (the session's DataLoader patches) ----------------------
    def created(self, loader: DataLoader) -> None:
        self._loaders[id(loader)] = loader

    def iterated(self, loader: DataLoader, it: Any) -> None:
        """A pass over the loader begins (`iter(loader)` returned `it`)."""
        self._loaders[id(loader)] = loader
        setattr(it, LOADER_ATTRIBUTE, id(loader))
        self._current_id = id(loader)

    def fetched(self, it: Any) -> None:
        """A batch is fetched from `it`: its loader is the current one."""
        self._current_id = getattr(it, LOADER_ATTRIBUTE, self._current_id)

    def current(self) -> Optional[DataLoader]:
        """The loader whose batch was fetched last (None: none, or it is gone)."""
        return self._loaders.get(self._current_id) if self._current_id is not None else None

    def current_batch_size(self) -> Optional[int]:
        """The batch size of the loader being consumed (None: none, or no fixed size)."""
        loader = self.current()
        return datamod.loader_batch_size(loader) if loader is not None else None

    def current_role(self) -> Optional[str]:
        return self._roles.get(self._current_id) if self._current_id is not None else None

    def feeding_evaluation(self) -> bool:
        """The current batch comes from a loader that never drove an optimizer step, while
        one that did is known (so it is an evaluation loader)."""
        return (self._current_id is not None and self.current_role() != "train"
                and "train" in self._roles.values())

    # -- observations ---------------------------------------------------------------------
    def on_model_call(self, p: Pending, step: int, phase: str) -> None:
        """A recorded, decided root call: the batch size of an evaluation loader."""
        loader = self.current()
        if loader is None:
            return
        role = self._roles.get(id(loader)) or ("eval" if phase == "eval" else None)
        if role == "eval":
            self._roles[id(loader)] = "eval"
            p.value(step, phase, "loader.eval.batch_size", datamod.loader_batch_size(loader))

    def on_train_step(self, p: Pending, step: int) -> None:
        """An observed optimizer step: the current loader is a training loader."""
        loader = self.current()
        if loader is not None:
            self._roles[id(loader)] = "train"
            p.value(step, "train", "loader.train.batch_size", datamod.loader_batch_size(loader))

    def examine_train(self, p: Pending, step: int) -> None:
        """At an observed optimizer step: the current (training) loader's dataset against
        every other loader's, once per loader."""
        loader = self.current()
        if loader is not None:
            self._examine(p, step, loader)

    def examine_late(self, p: Pending, step: int) -> None:
        """An eval loader created after the first step is examined when first used."""
        cur = self._current_id
        if cur is None or cur in self._examined:
            return
        train = next((self._loaders.get(i) for i, r in self._roles.items() if r == "train"
                      and self._loaders.get(i) is not None), None)
        if train is not None:
            self._examine(p, step, train)

    def _examine(self, p: Pending, step: int, train: DataLoader) -> None:
        """Overlap and dataset statistics of the train loader vs every other loader."""
        if id(train) not in self._examined:
            self._examined.add(id(train))
            self._peek(p, step, train, "train")
        for other in list(self._loaders.values()):
            if other is train or id(other) in self._examined or self._roles.get(id(other)) == "train":
                continue
            self._examined.add(id(other))
            ov = datamod.overlap(train.dataset, other.dataset)
            p.value(step, "eval", "data.overlap", ov.count)
            p.value(step, "eval", "data.overlap_fraction", ov.count / max(1, ov.eval_size))
            self._peek(p, step, other, "eval")

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
