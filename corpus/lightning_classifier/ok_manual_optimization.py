"""lightning_classifier ok: the same training with manual optimization (opt.zero_grad(),
self.manual_backward(loss), opt.step() in training_step)."""
from common import ManualClassifier, run


def main(argv=None):
    return run(argv, model=ManualClassifier())


if __name__ == "__main__":
    main()
