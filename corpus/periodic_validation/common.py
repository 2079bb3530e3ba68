"""Shared code of the periodic_validation case: an image folder listed class by class (as
torchvision's ImageFolder lists one), a small BatchNorm/Dropout CNN, and a training loop
that validates every few optimizer steps in the middle of an epoch and decays the learning
rate per epoch with StepLR. Each variant passes its deviation to `run` as a keyword.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

CLASSES = 8
SIDE = 16
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def render(n_per_class, seed):
    """Class-conditional images: stripes at the class's angle and frequency in the class's
    colour, on a noisy background; returned class by class (the folder's listing order)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIDE, dtype=torch.float), torch.arange(SIDE, dtype=torch.float),
                            indexing="ij")
    images, labels = [], []
    for c in range(CLASSES):
        angle = torch.pi * c / CLASSES + 0.15 * torch.randn(n_per_class, 1, 1, generator=g)
        freq = 0.6 + 0.1 * (c % 3) + 0.05 * torch.randn(n_per_class, 1, 1, generator=g)
        phase = 2 * torch.pi * torch.rand(n_per_class, 1, 1, generator=g)
        wave = torch.sin(freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
        colour = torch.tensor([(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1], dtype=torch.float) * 0.5 + 0.25
        img = 0.5 + 0.3 * wave[:, None] * colour[None, :, None, None]
        img = img + 0.2 * torch.randn(n_per_class, 3, SIDE, SIDE, generator=g)
        images.append(img.clamp(0, 1))
        labels += [c] * n_per_class
    return torch.cat(images), labels


class ImageFolderLike(Dataset):
    """Samples in listing order (class by class) with their `targets`, normalised on read."""

    def __init__(self, n_per_class, seed):
        self.images, self.targets = render(n_per_class, seed)
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return (self.images[i] - self.mean) / self.std, self.targets[i]


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
                                        nn.Dropout(0.3), nn.Linear(64, CLASSES))

    def forward(self, x):
        return self.classifier(self.features(x))


def validate(model, loader, criterion):
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += criterion(out, y).item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    return correct / n, loss / n


def run(argv=None, *, shuffle=True, restore_train_mode=True, scheduler_per_batch=False, validate_every=10,
        seed=0, milestones=None):
    """One training run; the keywords are the variants' deviations from the reference."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.02)
    args = ap.parse_args(argv)
    torch.manual_seed(int(os.environ.get("SEED", seed)))
    train_set, test_set = ImageFolderLike(128, seed=1), ImageFolderLike(32, seed=2)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=shuffle)
    test_loader = DataLoader(test_set, batch_size=128)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    if milestones is None:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    step, acc, val_loss = 0, 0.0, 0.0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            if scheduler_per_batch:
                scheduler.step()
            step += 1
            if step % validate_every == 0:
                acc, val_loss = validate(model, test_loader, criterion)
                if restore_train_mode:
                    model.train()
        if not scheduler_per_batch:
            scheduler.step()
        print(f"epoch {epoch + 1}: step {step} val acc {acc:.3f} val loss {val_loss:.3f} "
              f"lr {optimizer.param_groups[0]['lr']:.2g}")
    acc, val_loss = validate(model, test_loader, criterion)
    metrics = {"test_acc": round(acc, 4), "test_loss": round(val_loss, 4), "steps": step}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer, "train_loader": train_loader,
            "test_loader": test_loader}
