"""Active probes (`invar probe lr|robustness`): they change what the run does (its learning
rate) or evaluate its trained model again (under input shifts), unlike the tracer, which only
observes. Each is an Extension attached to a traced run in the supervisor's child process;
its result comes back as the run fact PROBE_RESULT (docs/probes.md)."""
from __future__ import annotations

from typing import Any, Mapping

PROBE_RESULT = "probe_result"  # run fact: the probe's result (JSON)


def extension_for(probe: Mapping[str, Any]) -> Any:
    """The Extension a RunSpec's `probe` asks for: {"name": "lr", "steps", "lr_min", "lr_max"}
    or {"name": "robustness", "shifts": [[name, value], ...]}."""
    if probe["name"] == "lr":
        from invariants.app.probes.lr import LRRangeProbe
        return LRRangeProbe(int(probe["steps"]), float(probe["lr_min"]), float(probe["lr_max"]))
    if probe["name"] == "robustness":
        from invariants.app.probes.evaluation import RobustnessProbe
        return RobustnessProbe([(str(n), float(v)) for n, v in probe["shifts"]])
    raise ValueError(f"unknown probe {probe['name']!r}")

