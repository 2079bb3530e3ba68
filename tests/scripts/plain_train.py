"""A plain seeded training script used by the tracer tests (argparse, __main__, sibling import)."""
import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from plain_model import make_model  # sibling-module import


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--functional", action="store_true")
    ap.add_argument("--exit-zero", action="store_true")
    ap.add_argument("--crash-at", type=int, default=-1)
    ap.add_argument("--overlap", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    x = torch.randn(512, 3, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean(dim=(1, 2)) > 0).long()
    base = TensorDataset(x, y)
    train_idx = list(range(0, 384))
    test_idx = list(range(256, 512)) if args.overlap else list(range(384, 512))
    train = DataLoader(Subset(base, train_idx), batch_size=32, shuffle=True)
    test = DataLoader(Subset(base, test_idx), batch_size=64)
    model = make_model()
    opt = torch.optim.SGD([
        {"params": model.features.parameters(), "lr": 0.05},
        {"params": model.head.parameters(), "lr": 0.1},
    ], momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb) if args.functional else loss_fn(out, yb)
            loss.backward()
            opt.step()
            step += 1
            if step == args.crash_at:
                raise RuntimeError("boom at step %d" % step)
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in test:
                correct += (model(xb).argmax(1) == yb).sum().item()
        print(f"epoch {epoch} acc {correct / len(test.dataset):.3f}")
        if args.exit_zero and epoch == 0:
            if args.out:
                torch.save(model.state_dict(), args.out)
            sys.exit(0)
    if args.out:
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
