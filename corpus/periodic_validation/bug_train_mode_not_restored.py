"""periodic_validation bug (pytorch-fcn issue 57): validate() calls model.eval() in the
middle of an epoch and nothing calls model.train() until the next epoch starts, so the rest
of every epoch trains with BatchNorm on running statistics and Dropout off."""
from common import run


def main(argv=None):
    return run(argv, restore_train_mode=False)  # BUG: model.train() only at the start of each epoch


if __name__ == "__main__":
    main()
