"""Regression with an MLP on house-price-like tabular features (nn.MSELoss).

The model outputs one value per row, shape [B, 1]; the targets have shape [B]. The
prediction is squeezed to [B] before the loss, as in the fix of PyTorch forum thread
148155.
"""
import argparse
import json
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FEATURES = ["area", "rooms", "age", "distance", "floor", "garden", "school", "noise"]


def make_houses(n, seed):
    """Standardised features and a standardised price with interactions and noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(FEATURES), generator=g)
    area, rooms, age, dist, floor, garden, school, noise = x.T
    price = (1.2 * area + 0.5 * rooms - 0.4 * age - 0.8 * torch.tanh(dist) + 0.3 * floor * area
             + 0.4 * garden * (dist > 0) + 0.5 * school - 0.2 * noise ** 2)
    price = price + 0.3 * torch.randn(n, generator=g)
    return x, (price - 0.2) / 1.7


def evaluate(model, loader):
    """Test MSE and R^2 of the model's predictions."""
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            preds.append(model(x).reshape(-1))
            targets.append(y)
    pred, target = torch.cat(preds), torch.cat(targets)
    mse = ((pred - target) ** 2).mean().item()
    return mse, 1 - mse / target.var(unbiased=False).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    torch.manual_seed(int(os.environ.get("SEED", 0)))

    train_loader = DataLoader(TensorDataset(*make_houses(1024, seed=1)), batch_size=64, shuffle=True)
    test_loader = DataLoader(TensorDataset(*make_houses(512, seed=2)), batch_size=256)
    model = nn.Sequential(nn.Linear(len(FEATURES), 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 1))
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x).squeeze(1), y)
            loss.backward()
            optimizer.step()
        mse, r2 = evaluate(model, test_loader)
        print(f"epoch {epoch + 1}: train loss {loss.item():.4f}  test mse {mse:.4f}  test r2 {r2:.3f}")

    metrics = {"test_r2": r2, "test_mse": mse, "train_loss": loss.item()}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer,
            "train_loader": train_loader, "test_loader": test_loader}


if __name__ == "__main__":
    main()
