"""Extension: the one way to add an observer to a traced run from outside the session.

Pass extensions to `TraceSession(..., extensions=[...])` (or `run_script`, or the
application's `trace_to_store`). The session calls their methods at fixed points of the
run, in the order the extensions were given and after its own observers. Every call is
fault-guarded like a built-in observer: an exception is recorded as a `tracer.fault`
observation (`<name>: <error>`) and silences that extension for the rest of the run; it
never reaches the user's program. Inside every call the tracer is quiet, so model code an
extension runs is not observed. An extension may raise `StopRequested` to end the run at
once (`invar shapes` does after its analysis) or call `session.request_stop(reason)` to
end it at the next optimizer step.

What an extension may use of the session is `SessionView` below: it records through
`session.record(phase, variable, value)` (at the current step) and reads the step, the
root model, the config, the current loader and module names. Whatever it learned is read
from the extension object after the run; run-level facts for the store come back through
`facts()` in `RunResult.facts`.

Subclass `Extension` and override what you need: each method is a no-op by default, and
the session dispatches an event only to the extensions that override it (module outputs
are frequent).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ContextManager, Dict, Mapping, Optional, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn


class SessionView(Protocol):
    """The part of a TraceSession an extension uses."""

    step: int      # optimizer steps taken
    config: Any    # the session's TraceConfig

    @property
    def root(self) -> "Optional[nn.Module]":
        """The root model, once found."""

    def observed(self, step: int) -> bool:
        """Whether optimizer step `step` is observed."""

    def record(self, phase: str, variable: str, value: Any) -> None:
        """Adds one observation at the current step."""

    def current_loader(self) -> Any:
        """The DataLoader whose batch is being processed, if any."""

    def module_name(self, module: "nn.Module") -> Optional[str]:
        """A module's qualified name in the root model."""

    def request_stop(self, reason: str) -> None:
        """Ends the run at the next optimizer step."""

    def quiet(self) -> ContextManager[Any]:
        """A block inside which the tracer ignores everything."""


class Extension:
    """An observer outside the session; see the module docstring for the contract."""

    name = "extension"  # names its faults (`tracer.fault`) and what a fault silences

    def attach(self, session: "SessionView") -> None:
        """When the session starts, before its hooks are installed."""

    def on_first_call(self, session: "SessionView", root: "nn.Module", args: tuple,
                      kwargs: Mapping[str, Any]) -> None:
        """Once, at the root model's first call, before its forward runs (static analyses):
        its positional `args` and keyword `kwargs` (`model(input_ids=..., labels=...)`)."""

    def on_input(self, session: "SessionView", root: "nn.Module", args: tuple, kwargs: Mapping[str, Any]) -> None:
        """At every call of the root model the session sees, after the built-in input
        observations, with the call's positional and keyword arguments. (The rest of an
        unobserved training step runs without module hooks, so its further calls, e.g.
        gradient accumulation's micro-batches, are not seen.)"""

    def on_module_output(self, session: "SessionView", module: "nn.Module", output: Any) -> None:
        """After each module call inside a recorded root call (`session.module_name(module)`
        names it)."""

    def on_output(self, session: "SessionView", root: "nn.Module", output: Any) -> None:
        """At the end of a recorded root call, after the built-in output observations."""

    def on_loss(self, session: "SessionView", name: str, pair: tuple, result: Any) -> None:
        """After every functional loss (loss modules call them too) the session sees
        outside its own quiet blocks: `name` (`cross_entropy`, ...), `pair` (input, target),
        `result`; after the built-in loss observations."""

    def on_step(self, session: "SessionView", optimizer: "Optional[torch.optim.Optimizer]") -> None:
        """After every observed training step, before the step's flush: a step of the primary
        optimizer, or (`optimizer` None) a backward followed by the script's own parameter
        updates when no torch.optim optimizer trains the model."""

    def on_end(self, session: "SessionView") -> None:
        """When the session ends (its hooks removed), before the last flush."""

    def facts(self) -> Dict[str, Any]:
        """Run-level facts (JSON-able) for whoever records the run, read once after it."""
        return {}


# The events the session dispatches, in no particular order.
EVENTS = ("attach", "on_first_call", "on_input", "on_module_output", "on_output", "on_loss", "on_step", "on_end")


def overriding(extensions: "list[Extension]", event: str) -> "list[Extension]":
    """The extensions that override `event`, in their order."""
    base = getattr(Extension, event)
    return [e for e in extensions if getattr(type(e), event, base) is not base]
