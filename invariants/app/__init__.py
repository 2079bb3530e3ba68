"""The application around the core: the command line, the workflows that join the tracer,
the solver and the core (infer, check, the static phase, distributed launch and merge),
the store, and the corpus evaluation, benchmarks and demo.

The core (`invariants/` outside this package) imports nothing of torch, the tracer or the
solver; this package is the only place that wires them together.
"""
