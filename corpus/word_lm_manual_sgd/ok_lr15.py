"""word_lm_manual_sgd ok: the initial learning rate 15 instead of 20 (the example's --lr)."""
from common import run


def main(argv=None):
    return run(argv, lr=15.0)


if __name__ == "__main__":
    main()
