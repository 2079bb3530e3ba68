"""hf_trainer_bert ok: another default seed."""
from common import run


def main(argv=None):
    return run(argv, seed=5)


if __name__ == "__main__":
    main()
