"""optimizer_recipe ok variant: weight decay 1e-4 instead of 5e-4 on the same (weight-matrix) group."""
from common import run


def main(argv=None):
    return run(argv, weight_decay=1e-4)  # OK: another decay value, same groups


if __name__ == "__main__":
    main()
