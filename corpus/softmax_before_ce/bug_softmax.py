# A small CNN on MNIST-like 16x16 glyphs, trained with nn.CrossEntropyLoss.
# BUG (illiterate/BertClassifier issue 2): the model ends in nn.Softmax, and CrossEntropyLoss
# applies log-softmax again: the loss cannot go below about 1.46 and its gradients are
# squashed, so training is slow and the loss curve flattens early.
import json
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 10
SIZE = 16
MEAN, STD = 0.14, 0.30


def glyph_strokes(seed=2024):
    """Each class is drawn with three fixed strokes (start and end points in [-0.7, 0.7])."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(NUM_CLASSES, 3, 2, 2, generator=g) * 1.4 - 0.7


def draw(labels, seed):
    """Renders glyphs with a random shift, stroke width and noise; values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    strokes = glyph_strokes()[labels] + (torch.rand(n, 1, 1, 2, generator=g) - 0.5) * 0.3
    c = torch.linspace(-1, 1, SIZE)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    p = torch.stack([xx, yy], -1).view(1, 1, SIZE * SIZE, 2)
    a, b = strokes[:, :, None, 0], strokes[:, :, None, 1]
    t = (((p - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1).clamp_min(1e-6)).clamp(0, 1)
    dist = (p - (a + t[..., None] * (b - a))).norm(dim=-1).min(1).values
    width = 0.08 + 0.05 * torch.rand(n, 1, generator=g)
    img = torch.sigmoid((width - dist) * 40).view(n, 1, SIZE, SIZE)
    return (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(0, 1)


def make_digits(n, seed):
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=torch.Generator().manual_seed(seed))
    return (draw(labels, seed + 1) - MEAN) / STD, labels


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, NUM_CLASSES), nn.Softmax(dim=1),  # BUG: CrossEntropyLoss expects logits
    )


def main(argv=None):
    torch.manual_seed(int(os.environ.get("SEED", 0)))
    train_loader = DataLoader(TensorDataset(*make_digits(1280, seed=1)), batch_size=64, shuffle=True)
    test_loader = DataLoader(TensorDataset(*make_digits(500, seed=2)), batch_size=250)
    model = build_model()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    for epoch in range(4):
        model.train()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
        model.eval()
        correct, test_loss = 0, 0.0
        with torch.no_grad():
            for images, labels in test_loader:
                outputs = model(images)
                test_loss += criterion(outputs, labels).item() * len(labels)
                correct += (outputs.argmax(1) == labels).sum().item()
        acc, test_loss = correct / len(test_loader.dataset), test_loss / len(test_loader.dataset)
        print(f"epoch {epoch + 1}: train loss {loss.item():.3f}  test loss {test_loss:.3f}  test acc {acc:.3f}")

    metrics = {"test_acc": acc, "test_loss": test_loss, "train_loss": loss.item()}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer,
            "train_loader": train_loader, "test_loader": test_loader}


if __name__ == "__main__":
    main()
