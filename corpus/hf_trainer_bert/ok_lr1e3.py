"""hf_trainer_bert ok: learning_rate 1e-3 instead of 2e-3."""
from common import run


def main(argv=None):
    return run(argv, learning_rate=1e-3)


if __name__ == "__main__":
    main()
