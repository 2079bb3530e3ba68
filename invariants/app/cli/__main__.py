"""`python -m invariants.app.cli`: the invar command."""
from invariants.app.cli import main

main()
