"""optimizer_recipe ok variant: another default seed."""
from common import run


def main(argv=None):
    return run(argv, seed=5)  # OK: another seed


if __name__ == "__main__":
    main()
