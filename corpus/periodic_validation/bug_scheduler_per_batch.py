"""periodic_validation bug (SRGAN-PyTorch issue 1): the epoch scheduler StepLR(step_size=2,
gamma=0.1) is stepped after every batch, so the learning rate falls x0.1 every 2 batches and
is ~0 after a few dozen steps; the loss just stops falling."""
from common import run


def main(argv=None):
    return run(argv, scheduler_per_batch=True)  # BUG: scheduler.step() inside the batch loop


if __name__ == "__main__":
    main()
