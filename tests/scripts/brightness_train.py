"""A small image classifier on synthetic data, optionally trained with brightness augmentation
(`--augment-brightness`): eight stripe orientations in 3x16x16 images in [0, 1], normalised
by the script with the training set's per-channel statistics, an MLP with a ReLU, evaluation
with a loss after every epoch. For `invar probe robustness` (tests/e2e/test_probes.py)."""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def images(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 8, (n,), generator=g)
    c = torch.linspace(-1, 1, 16)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    angle = labels.float() * math.pi / 8 + 0.05 * torch.randn(n, generator=g)
    phase = 2 * math.pi * torch.rand(n, generator=g)
    u = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    stripes = 0.5 + 0.1 * torch.sin(3 * math.pi * u + phase[:, None, None])
    tint = 0.9 + 0.1 * torch.rand(n, 3, generator=g)
    x = stripes[:, None] * tint[:, :, None, None] + 0.05 * torch.randn(n, 3, 16, 16, generator=g)
    return x.clamp(0, 1), labels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--augment-brightness", action="store_true")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    train_x, train_y = images(2000, 1)
    test_x, test_y = images(500, 2)
    mean = train_x.mean(dim=(0, 2, 3))[:, None, None]
    std = train_x.std(dim=(0, 2, 3))[:, None, None]
    train = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
    test = DataLoader(TensorDataset(test_x, test_y), batch_size=250)
    model = nn.Sequential(nn.Flatten(), nn.Linear(768, 64), nn.ReLU(), nn.Linear(64, 8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        model.train()
        for x, y in train:
            if args.augment_brightness:
                x = (x * (0.4 + 1.2 * torch.rand(len(x), 1, 1, 1))).clamp(0, 1)
            opt.zero_grad()
            loss = F.cross_entropy(model((x - mean) / std), y)
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                out = model((x - mean) / std)
                F.cross_entropy(out, y)
                correct += (out.argmax(1) == y).sum().item()
        print(f"epoch {epoch + 1}: test accuracy {correct / len(test_x):.3f}")


if __name__ == "__main__":
    main()
