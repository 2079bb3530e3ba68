"""word_lm_manual_sgd reference: pytorch/examples' word language model loop, which zeroes
the gradients with model.zero_grad() and updates every parameter itself (no torch.optim)."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()
