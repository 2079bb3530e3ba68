"""gpt_loss_in_forward ok: another default seed."""
from common import run


def main(argv=None):
    return run(argv, seed=3)


if __name__ == "__main__":
    main()
