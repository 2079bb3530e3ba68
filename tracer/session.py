"""TraceSession: global torch hooks, installed only inside a `with` block, that observe a
training run and emit named observations (see docs/observations.md).

The session owns the hooks' lifecycle and dispatches what they see to observers with one
job each: the root model and optimizers (root.py), the train/eval phase of each root call
(phase.py), the model's input and output (model_io.py), losses and labels (losses.py),
activations (activations.py), parameters and the optimizer (params.py), loaders and
datasets (loaders.py), step cost (cost.py), and then to the extensions it was given
(extension.py: the static phase, graph capture, the cross-rank comparison, ...). When a
training step's gradients are final and its update applied is found by steps.py; what is
observed then is `_before_update` and `_after_update` below. What it observes is set by a
TraceConfig (config.py, re-exported here with the exceptions that end a traced script).

The session observes, never changes: no RNG is consumed, no tensor is moved or modified,
no mode or `requires_grad` flag is touched, and an exception inside an observer is
recorded as a `tracer.fault` observation and silences that observer, never reaching the
user's program. Statistics are reduced on the tensor's device and gathered once per
flush (see pending.py, stats.py).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.optim.optimizer as optimizer_module
from torch import nn
from torch.utils.data import DataLoader

from tracer.activations import ActivationObserver
from tracer.calls import call_kwargs
from tracer.config import StepBudgetReached, StopRequested, TraceConfig
from tracer.cost import StepCost
from tracer.extension import EVENTS, Extension, overriding
from tracer.loaders import LoaderObserver
from tracer.losses import LossObserver
from tracer.model_io import ModelIO
from tracer.params import ClipObserver, OptimizerObserver, ParameterObserver
from tracer.patches import (backward_patches, clip_patches, compiling, dropout_patches, jit_patches,
                            loader_patches, loss_patches, optimizer_patches, relu_patches)
from tracer.pending import Pending, Row
from tracer.phase import PhaseMachine, RootCall
from tracer.root import UNOBSERVED_WHEN_COMPILED, RootTracker
from tracer.steps import StepBoundaries



class TraceSession:
    """Installs the tracer's hooks for the duration of a `with` block.

    `sink(rows)` receives observations at every flush (once per observed optimizer step
    and at the end). `extensions` (see tracer/extension.py) are called after the built-in
    observers at the points their methods name.
    """

    def __init__(self, config: TraceConfig, sink: Callable[[List[Row]], None],
                 extensions: Sequence[Extension] = ()):
        self.config = config
        self.sink = sink
        self.extensions = list(extensions)
        self._by_event: Dict[str, List[Extension]] = {e: overriding(self.extensions, e) for e in EVENTS}
        self.step = 0
        self.faults: List[str] = []
        self.phases: Set[str] = set()
        self.variables: Set[str] = set()
        self.stop_reason: Optional[str] = None
        self._quiet = 0
        self._disabled: Set[str] = set()
        self._stack: Optional[contextlib.ExitStack] = None
        self._pending = Pending()  # the observations of the next flush
        self._roots = RootTracker()
        self._loaders = LoaderObserver()
        self._phase_machine = PhaseMachine(self._pending, config.eval_batches)
        self._model_io = ModelIO()
        self._losses = LossObserver()
        self._activations = ActivationObserver(config.activations, self._roots.known_prefix)
        self._params = ParameterObserver(config.block_depth)
        self._optim = OptimizerObserver()
        self._clip = ClipObserver()
        self._cost = StepCost()
        self._steps = StepBoundaries(self._before_update, self._after_update)
        # Dispatch state of the module hooks: nesting depth, whether the root's forward is
        # running and which of its modules, and the root call being recorded.
        self._depth = 0
        self._in_root = False
        self._mstack: List[nn.Module] = []
        self._recording: Optional[RootCall] = None
        self._call_losses: List[int] = []  # ids of what loss functions returned inside the root call
        self._first_call_done = False
        # The global module hooks are lifted for the forward and backward of a training step
        # that is not observed (every module call is slower while any global hook exists) and
        # put back at the next optimizer step, batch or loader pass (see _pause_module_hooks).
        self._module_hooks: Optional[Tuple[Any, Any]] = None

    # -- installation -----------------------------------------------------------------
    def __enter__(self) -> "TraceSession":
        self._notify("attach")
        s = contextlib.ExitStack()
        self._resume_module_hooks()
        s.callback(self._pause_module_hooks)
        opt = optimizer_module
        s.callback(opt.register_optimizer_step_pre_hook(self._pre_step).remove)
        s.callback(opt.register_optimizer_step_post_hook(self._post_step).remove)
        optimizer_patches(s, self._roots.optimizer_created, self._optim.zero_grad_called)
        loader_patches(s, self._loader_created, self._loader_pass, self._batch_fetched)
        loss_patches(s, self._on_loss)
        dropout_patches(s, self._dropout_applied)
        relu_patches(s, self._on_relu)
        clip_patches(s, self._on_clip)
        backward_patches(s, self._backward_started, self._backward_ended)
        jit_patches(s)  # last: it suspends every patch above while TorchScript compiles
        self._stack = s
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._stack is not None
        self._stack.close()
        self._stack = None
        self._steps.end()
        self._notify("on_end")
        self.flush()

    # -- for extensions ---------------------------------------------------------------
    @contextlib.contextmanager
    def quiet(self) -> Any:
        """The tracer ignores everything inside (its own analyses run model code)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def record(self, phase: str, variable: str, value: Any) -> None:
        """Adds one observation at the current step."""
        self._pending.value(self.step, phase, variable, value)

    def current_loader(self) -> Optional[DataLoader]:
        """The DataLoader whose batch is being processed, if any."""
        return self._loaders.current()

    def module_name(self, module: nn.Module) -> Optional[str]:
        """A module's qualified name in the root model."""
        return self._roots.name_of(module)

    @property
    def root(self) -> Optional[nn.Module]:
        """The root model, once found."""
        return self._roots.root

    def request_stop(self, reason: str) -> None:
        """Ends the run at the next optimizer step (listeners call this)."""
        self.stop_reason = reason

    def observed(self, step: int) -> bool:
        """Whether optimizer step `step` is observed (dense, then sampled)."""
        c = self.config
        return step < c.dense_steps or (c.sample_every > 0 and step % c.sample_every == 0)

    # -- fault isolation --------------------------------------------------------------
    def _guard(self, observer: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self._quiet or observer in self._disabled:
            return None
        self._quiet += 1
        try:
            return fn(*args)
        except Exception as e:  # an observer fault must never reach the user's program
            self._fault(observer, e)
            return None
        finally:
            self._quiet -= 1

    def _fault(self, observer: str, e: Exception) -> None:
        """Records an observer's exception and silences that observer for the run."""
        self._disabled.add(observer)
        msg = f"{observer}: {type(e).__name__}: {e}"[:500]
        self.faults.append(msg)
        self._pending.value(self.step, "train", "tracer.fault", msg)

    def _notify(self, event: str, *args: Any) -> None:
        """Calls `event` on every extension that overrides it, each fault-guarded."""
        for ext in self._by_event[event]:
            self._guard(ext.name, getattr(ext, event), self, *args)

    # -- step accounting --------------------------------------------------------------
    def _detailed(self, step: int) -> bool:
        # The costlier statistics (a pass over every activation, a copy of the parameters).
        return self.config.detail_every <= 1 or step % self.config.detail_every == 0

    def flush(self) -> None:
        """Hands the observations so far to the sink (an undecided call's as evaluation)."""
        self._phase_machine.release()
        if self._pending.empty():
            return  # an unobserved step
        rows = self._pending.resolve()
        if rows:
            for r in rows:
                self.variables.add(r[2])
                self.phases.add(r[1])
            self.sink(rows)

    # -- module hooks -----------------------------------------------------------------
    def _resume_module_hooks(self) -> None:
        if self._module_hooks is None:
            mod = torch.nn.modules.module
            self._module_hooks = (mod.register_module_forward_pre_hook(self._pre_forward),
                                  mod.register_module_forward_hook(self._post_forward, always_call=True))

    def _pause_module_hooks(self) -> None:
        """Removes the global module hooks. Called at the root's call (and at the end of the
        session), so the root's own forward hook will not run: the state it would reset is
        reset here."""
        if self._module_hooks is not None:
            for handle in self._module_hooks:
                handle.remove()
            self._module_hooks = None
        self._depth, self._in_root, self._mstack, self._recording = 0, False, [], None

    def _pre_forward(self, module: nn.Module, args: tuple) -> None:
        # dynamo traces hooks into the compiled graph: first, before any state is read
        if compiling() or self._quiet:
            return
        self._depth += 1
        if self._in_root:
            self._mstack.append(module)
        elif self._depth == 1:
            if self._roots.root is None:
                if self._roots.has_optimizers():
                    self._guard("root", self._roots.consider, module)
                elif torch.is_grad_enabled():
                    self._guard("root", self._roots.candidate, module)
            if self._roots.is_root_call(module):
                self._steps.script_continues()  # a step without torch.optim had its update
                self._root_called(self._roots.root, args, call_kwargs())

    def _root_called(self, root: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> None:
        self._in_root = True
        self._mstack = [root]
        self._call_losses = []
        self._activations.root_called()
        self._losses.root_called()
        call = self._guard("phase", self._phase_machine.begin, root, self._loaders, self.observed(self.step))
        if not self._first_call_done:
            self._first_call_done = True
            self._cost.restart()
            if self._roots.compiled:
                self._pending.value(self.step, "train", "tracer.unobserved", UNOBSERVED_WHEN_COMPILED)
            self._notify("on_first_call", root, args, kwargs)
        self._model_io.sees_inside = not self._roots.compiled
        if call is not None and call.recorded:
            self._recording = call
            step = self.step
            if call.phase == "eval" and not call.provisional:
                self._guard("data", self._loaders.examine_late, self._pending, step)
            self._guard("input", self._model_io.on_input, call.out, step, call.phase, root, args, kwargs,
                        self._loaders.current_batch_size())
            if not call.provisional:
                self._guard("loader", self._loaders.on_model_call, call.out, step, call.phase)
        elif call is not None and call.phase == "train" and self.config.lift_hooks and not self._roots.compiled:
            # nothing of this step's forward is recorded (a compiled model calls no module
            # hooks inside: nothing to save, and dynamo would recompile for each toggle)
            self._pause_module_hooks()
        self._notify("on_input", root, args, kwargs)

    def _post_forward(self, module: nn.Module, args: tuple, output: Any) -> None:
        if compiling() or self._quiet:
            return
        self._depth = max(0, self._depth - 1)
        if not self._in_root:
            return
        if self._mstack and self._mstack[-1] is module:
            self._mstack.pop()
        call = self._recording
        if self._depth == 0 and self._roots.is_root_call(module):
            self._in_root = False
            self._mstack = []
            root = self._roots.root
            if call is not None:
                self._guard("output", self._model_io.on_output, call.out, self.step, call.phase, output,
                            tuple(self._call_losses))
                self._notify("on_output", root, output)
            self._recording = None
            return
        if call is not None:
            if call.phase == "train":
                self._guard("module", self._module_output, module, output)
            self._notify("on_module_output", module, output)

    def _module_output(self, module: nn.Module, output: Any) -> None:
        self._activations.on_module_output(self._pending, self.step, self._detailed(self.step),
                                           self._roots.name_of(module), module, output)

    def _dropout_applied(self) -> None:
        if self._in_root and self._recording is not None and not self._quiet:
            self._model_io.dropout_applied()

    def _on_relu(self, out: Any) -> None:
        if self._in_root and self._recording is not None and self._recording.phase == "train" and not self._quiet:
            parent = self._mstack[-1] if self._mstack else None
            self._guard("activations", self._activations.on_functional, self._pending, self.step,
                        self._detailed(self.step), parent, out)

    # -- losses and loaders -----------------------------------------------------------
    def _on_loss(self, name: str, pair: tuple, result: Any) -> None:
        self._guard("loss", self._loss, name, pair, result)
        if not self._quiet:
            self._notify("on_loss", name, pair, result)

    def _loss(self, name: str, pair: tuple, result: Any) -> None:
        if self._roots.root is None:
            return
        if self._in_root:  # a loss the model computes itself (HF `labels=`, GPT-style `targets`)
            self._call_losses.append(id(result))
        call = self._phase_machine.current  # a loss belongs to the root call before it
        if call.phase == "train" and not self.observed(self.step):
            # an unobserved training step still counts its labels (the class count needs many)
            self._losses.count_labels(name, pair, result)
            return
        self._losses.on_loss(call.out, self.step, call.phase, name, pair, result, self._loaders.train_classes)

    def _on_clip(self, max_norm: Any, total_norm: Any) -> None:
        if not self._quiet and self._roots.root is not None and self.observed(self.step):
            self._guard("clip", self._clip.on_clip, self._pending, self.step, max_norm, total_norm)

    def _loader_created(self, loader: DataLoader) -> None:
        self._guard("loader", self._loaders.created, loader)

    def _loader_pass(self, loader: DataLoader, it: Any) -> None:
        self._guard("loader", self._new_pass, loader, it)
        self._resume_module_hooks()  # a new pass (often evaluation) is observed

    def _new_pass(self, loader: DataLoader, it: Any) -> None:
        self._loaders.iterated(loader, it)
        self._phase_machine.new_pass()

    def _batch_fetched(self, it: Any) -> None:
        self._loaders.fetched(it)
        if self._module_hooks is None:
            self._resume_module_hooks()

    # -- backward ---------------------------------------------------------------------
    def _backward_started(self) -> None:
        if not self._quiet:
            self._steps.script_continues()  # a step without torch.optim had its update

    def _backward_ended(self, tensors: Any) -> None:
        if self._quiet:
            return
        own_updates = not self._roots.has_optimizers()  # no torch.optim: the script updates
        if own_updates and self._roots.root is None:
            self._guard("root", self._roots.adopt_candidate)
        if self._roots.root is None:
            return
        call = self._phase_machine.current
        if call.phase != "train" or self.observed(self.step):
            self._guard("loss", self._losses.on_backward, call.out, self.step, call.phase, tensors)
        if own_updates:
            self._resume_module_hooks()  # what follows the update (the next batch) is observed
            self._steps.backward_ended()

    # -- optimizer steps --------------------------------------------------------------
    def _pre_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> Any:
        if compiling():
            return None
        self._resume_module_hooks()  # whatever follows the step (evaluation) is observed
        if self._quiet or not self._roots.is_primary(optimizer):
            return None
        return self._steps.pre_step(optimizer, args, kwargs)

    def _post_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if compiling() or self._quiet or not self._roots.is_primary(optimizer):
            return
        self._steps.post_step(optimizer)

    def _before_update(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """A training step's gradients are final and its update is about to be applied
        (`optimizer` None: by the script itself, without torch.optim; tracer/steps.py)."""
        step, p, observed = self.step, self._pending, self.observed(self.step)
        self._guard("phase", self._phase_machine.decide_at_step, observed)
        zero_grads = self._optim.take_zero_grads()
        if not observed:
            return
        self._optim.record_zero_grads(p, step, zero_grads)
        root = self._roots.root
        if root is not None:
            held = self._roots.param_groups() if optimizer is not None else None
            self._guard("blocks", self._params.before_step, p, step, root, held, self._detailed(step))
        if optimizer is not None:
            self._guard("optimizer", self._optim.before_step, p, step, optimizer)
        self._guard("loader", self._loaders.on_train_step, p, step)
        self._guard("data", self._loaders.examine_train, p, step)

    def _after_update(self, optimizer: Optional[torch.optim.Optimizer], final: bool = False) -> None:
        """A training step's update was applied: the step's observations are flushed and the
        next step begins (or the run ends: budget or stop request; not when `final`, at the
        end of the run)."""
        if self._params.has_snapshot():
            self._guard("update", self._params.after_step, self._pending, self.step)
        self._cost.lap()
        if self.observed(self.step):
            self._notify("on_step", optimizer)
            self._cost.record(self._pending, self.step)
        self.flush()
        self.step += 1
        for observer in (self._phase_machine, self._activations, self._losses, self._optim):
            observer.next_step()
        if final:
            return
        if self.stop_reason is not None:
            raise StopRequested(self.stop_reason)
        if self.config.steps and self.step >= self.config.steps:
            raise StepBudgetReached(self.step)
