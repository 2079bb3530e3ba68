"""A Lightning classifier: a `LightningModule` whose `training_step` computes the loss from
`self(x)` and returns it (automatic optimization: Lightning runs forward, `zero_grad` and
`backward` inside `optimizer.step(closure)`), Adam from `configure_optimizers`, and a
`Trainer` validating every 10 batches. Also written with manual optimization
(`automatic_optimization = False`, `self.optimizers()`, `self.manual_backward`). The data
are 5 classes of 20 tabular features (Gaussian clusters), generated here."""
import json
import os

os.environ.setdefault("PL_DISABLE_FORK", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

FEATURES, CLASSES, BATCH = 20, 5, 32


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(3)) * 1.2
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return centers[y] + torch.randn(n, FEATURES, generator=g) * 2.0, y


class Classifier(L.LightningModule):
    def __init__(self, lr=0.02):
        super().__init__()
        self.lr = lr
        self.encoder = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x):
        return self.head(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class ManualClassifier(Classifier):
    """The same model trained with manual optimization."""

    def __init__(self, lr=0.02, zero_grad=True):
        super().__init__(lr)
        self.automatic_optimization = False
        self.zero_grad_each_step = zero_grad

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()
        if self.zero_grad_each_step:
            opt.zero_grad()
        loss = F.cross_entropy(self(x), y)
        self.manual_backward(loss)
        opt.step()
        self.log("train_loss", loss)
        return loss


def run(argv=None, seed=0, model=None, **trainer_args):
    seed = int(os.environ.get("SEED", seed))
    L.seed_everything(seed, verbose=False)
    model = model if model is not None else Classifier()
    train = DataLoader(TensorDataset(*make_data(1280, 1)), batch_size=BATCH, shuffle=True)
    val = DataLoader(TensorDataset(*make_data(320, 2)), batch_size=64)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=10,
                        num_sanity_val_steps=0, **trainer_args)
    trainer.fit(model, train, val)
    result = trainer.validate(model, val, verbose=False)[0]
    metrics = {"test_acc": float(result["val_acc"]), "val_loss": float(result["val_loss"])}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics}
