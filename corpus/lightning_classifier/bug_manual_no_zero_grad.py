"""lightning_classifier bug (manual optimization without opt.zero_grad(): the docs' manual
loop with its first line left out): self.manual_backward accumulates into .grad across
every batch, and momentum turns the growing sum into ever larger steps."""
from common import ManualClassifier, run


def main(argv=None):
    return run(argv, model=ManualClassifier(zero_grad=False))  # BUG: gradients never cleared


if __name__ == "__main__":
    main()
