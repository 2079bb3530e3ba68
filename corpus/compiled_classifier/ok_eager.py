"""compiled_classifier ok: the same training without torch.compile (invariants learned
from compiled runs hold for the eager model: the same blocks, the same parameters)."""
from common import run


def main(argv=None):
    return run(argv, compile_model=False)


if __name__ == "__main__":
    main()
