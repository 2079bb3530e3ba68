"""optimizer_recipe ok variant: gradient clipping at max_norm 0.5 instead of 1 (a moderate clip)."""
from common import run


def main(argv=None):
    return run(argv, max_norm=0.5)  # OK: a moderate clip


if __name__ == "__main__":
    main()
