"""periodic_validation ok: validation twice as often, train mode restored after each."""
from common import run


def main(argv=None):
    return run(argv, validate_every=5)  # OK: validate every 5 steps


if __name__ == "__main__":
    main()
