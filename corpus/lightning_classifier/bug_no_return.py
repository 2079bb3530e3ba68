"""lightning_classifier bug (graviraja/MLOps-Basics issue 14: "the loss is not returned, is
the model even training?"; Lightning only warns that training_step returned None and skips
the backward): the loss is logged but not returned, so no parameter gets a gradient and the
optimizer steps on nothing."""
import torch.nn.functional as F

from common import Classifier, run


class NoReturn(Classifier):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)  # BUG: the loss is never returned


def main(argv=None):
    return run(argv, model=NoReturn())


if __name__ == "__main__":
    main()
