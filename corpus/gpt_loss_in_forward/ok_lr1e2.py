"""gpt_loss_in_forward ok: learning rate 1e-2 instead of 2e-2."""
from common import run


def main(argv=None):
    return run(argv, lr=1e-2)


if __name__ == "__main__":
    main()
