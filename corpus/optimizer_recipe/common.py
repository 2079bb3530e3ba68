"""Shared code of the optimizer_recipe case: a residual MLP with LayerNorm trained with the
usual recipe of modern training scripts (nanoGPT's, timm's, the HF examples'): SGD with
momentum over two parameter groups (weight decay on weight matrices only, none on biases and
LayerNorm), a learning rate computed every step (linear warm-up, then cosine decay) and
written into every group, and gradient clipping. Each variant passes its deviation to `run`
as a keyword.
"""
import argparse
import json
import math
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

CLASSES = 10
FEATURES = 32


def make_data(n, seed):
    """Ten Gaussian clusters in 32 dimensions, each with its own centre and a few
    class-specific directions of spread; features standardised to unit scale."""
    g = torch.Generator().manual_seed(1234)
    centres = 1.0 * torch.randn(CLASSES, FEATURES, generator=g)
    axes = torch.randn(CLASSES, 4, FEATURES, generator=g) * 0.8
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    spread = torch.einsum("nk,nkf->nf", torch.randn(n, 4, generator=g), axes[labels])
    x = centres[labels] + spread + 2.2 * torch.randn(n, FEATURES, generator=g)
    return (x - x.mean(0)) / x.std(0), labels


class Table(Dataset):
    """Rows and labels; `shuffled_labels` permutes the labels on their own (the bug)."""

    def __init__(self, n, seed, shuffled_labels=False):
        self.x, self.y = make_data(n, seed)
        if shuffled_labels:
            self.y = self.y[torch.randperm(n, generator=torch.Generator().manual_seed(seed + 99))]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class ResMLP(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.stem = nn.Linear(FEATURES, width)
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x))))


def param_groups(model, weight_decay, decay_everything=False):
    """Weight matrices decay; biases and LayerNorm weights do not (nanoGPT's rule: 2-d
    parameters decay). `decay_everything` puts every parameter in one decayed group."""
    if decay_everything:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step, peak, warmup, total, schedule):
    """Linear warm-up from peak/warmup to peak, then cosine (or linear) decay to 10 %."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return peak * (1.0 - 0.9 * progress)
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def evaluate(model, loader):
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    model.train()
    return correct / n, loss / n


def run(argv=None, *, warmup=5, schedule="cosine", weight_decay=5e-4, decay_everything=False, max_norm=1.0,
        lr_into_every_group=True, shuffled_labels=False, seed=0):
    """One training run; the keywords are the variants' deviations from the reference."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    args = ap.parse_args(argv)
    torch.manual_seed(int(os.environ.get("SEED", seed)))
    train_set = Table(2048, seed=1, shuffled_labels=shuffled_labels)
    test_set = Table(512, seed=2)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)
    model = ResMLP()
    optimizer = torch.optim.SGD(param_groups(model, weight_decay, decay_everything), lr=args.lr, momentum=0.9)
    total = args.epochs * len(train_loader)
    step, acc, test_loss = 0, 0.0, 0.0
    for epoch in range(args.epochs):
        for x, y in train_loader:
            lr = learning_rate(step, args.lr, warmup, total, schedule)
            for group in optimizer.param_groups:
                if lr_into_every_group:
                    group["lr"] = lr
            if not lr_into_every_group:
                group["lr"] = lr  # the bug variant: after the loop, so only the last group gets it
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            step += 1
            if step % 10 == 0:
                acc, test_loss = evaluate(model, test_loader)
        print(f"epoch {epoch + 1}: step {step} loss {loss.item():.3f} test acc {acc:.3f} "
              f"lr {optimizer.param_groups[0]['lr']:.3g}")
    acc, test_loss = evaluate(model, test_loader)
    metrics = {"test_acc": round(acc, 4), "test_loss": round(test_loss, 4), "steps": step}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer, "train_loader": train_loader,
            "test_loader": test_loader}
