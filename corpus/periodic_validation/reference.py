"""periodic_validation reference: a BatchNorm/Dropout CNN on an 8-class image folder,
shuffled, validated every 10 optimizer steps (back to train mode after each validation),
StepLR decaying the learning rate x0.1 every 2 epochs."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()
