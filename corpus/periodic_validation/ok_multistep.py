"""periodic_validation ok: MultiStepLR (x0.1 after epochs 1 and 2) instead of StepLR, per epoch."""
from common import run


def main(argv=None):
    return run(argv, milestones=[1, 2])  # OK: MultiStepLR stepped per epoch

if __name__ == "__main__":
    main()
