"""lightning_classifier ok: another default seed."""
from common import run


def main(argv=None):
    return run(argv, seed=8)


if __name__ == "__main__":
    main()
