"""word_lm_manual_sgd bug (salesforce/corr_based_prediction issue 1: "the zero_grad is
outside the training stage, the gradients will be accumulated along the training data"):
model.zero_grad() is gone from the step, so every update applies the sum of all the
gradients so far (clipped to the same norm, so nothing explodes)."""
from common import run


def main(argv=None):
    return run(argv, zero_grad=False)  # BUG: gradients are never cleared


if __name__ == "__main__":
    main()
