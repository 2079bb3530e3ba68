"""Built-in invariant templates; importing this package registers them all."""
from invariants.templates import basic, relational, block, temporal, envelope, graph, universal  # noqa: F401
