"""`python -m invariants.cli ...`: the invar command under the module name torchrun's `-m`
and earlier documentation use. Part of the application (invariants/app/), not the core."""
from invariants.app.cli import main

if __name__ == "__main__":
    main()
