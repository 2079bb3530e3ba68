"""A classifier trained through `torch.compile(model)` (the default inductor backend): a
small MLP backbone and a linear head on tabular data, a DataLoader, Adam, evaluation every
10 steps. The data are 6 Gaussian classes in 24 features with class-specific directions,
generated here."""
import json
import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FEATURES, CLASSES, BATCH, EPOCHS, LR = 24, 6, 32, 3, 3e-3


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(5)) * 1.5
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = centers[y] + torch.randn(n, FEATURES, generator=g) * 3.0
    return x, y


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Dropout(0.1),
                                      nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x):
        return self.head(self.backbone(x))


def evaluate(net, loader):
    net.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (net(x).argmax(1) == y).sum().item()
            n += len(y)
    net.train()
    return correct / n


def run(argv=None, seed=0, compile_model=True, frozen_epochs=0):
    torch.manual_seed(int(os.environ.get("SEED", seed)))
    train = DataLoader(TensorDataset(*make_data(1536, 1)), batch_size=BATCH, shuffle=True)
    test = DataLoader(TensorDataset(*make_data(512, 2)), batch_size=BATCH)
    model = Classifier()
    net = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    step, start = 0, time.time()
    if frozen_epochs:  # linear probing first: the backbone trains from epoch `frozen_epochs` on
        model.backbone.requires_grad_(False)
    for epoch in range(EPOCHS):
        if frozen_epochs and epoch == frozen_epochs:
            model.backbone.requires_grad_(True)
        for x, y in train:
            optimizer.zero_grad()
            loss = criterion(net(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0:
                acc = evaluate(net, test)
                if step % 40 == 0:
                    print(f"step {step:4d}  loss {loss.item():.3f}  test acc {acc:.3f}  ({time.time() - start:.1f} s)")
    acc = evaluate(net, test)
    metrics = {"test_acc": acc, "train_loss": loss.item()}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics}
