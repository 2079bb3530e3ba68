"""lightning_classifier reference: automatic optimization, training_step returns the loss."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()
