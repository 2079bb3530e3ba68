"""compiled_classifier bug (a linear-probing warm-up whose unfreeze never comes, like the
frozen backbone of PyTorch forum 84911): the backbone is frozen "for the first 10 epochs"
of a 3-epoch run, so only the head ever trains, under torch.compile."""
from common import run


def main(argv=None):
    return run(argv, frozen_epochs=10)  # BUG: the run ends before the backbone is unfrozen


if __name__ == "__main__":
    main()
