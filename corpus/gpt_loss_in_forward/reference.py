"""gpt_loss_in_forward reference: a nanoGPT-style trainer whose model returns (logits, loss),
with targets the inputs shifted by one token."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()
