"""word_lm_manual_sgd ok: another default seed."""
from common import run


def main(argv=None):
    return run(argv, seed=7)


if __name__ == "__main__":
    main()
