"""Fine-tunes a pretrained EfficientNet-b0-like network on a CIFAR-100-like image set.

Forum 84911, cause 1: the post's freezing loop sets requires_grad=False on every parameter
whose name lacks "bn" -- the new classifier `_fc` included -- and the optimizer is given
only `_fc`'s parameters. Nothing is trained; BatchNorm running statistics still drift.
"""
import argparse
import json
import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from common import (IMAGE_SIZE, MEAN, STD, Compose, Normalize, Resize, SynthCIFAR100,
                    efficientnet_pretrained)


def evaluate(model, loader, criterion):
    model.eval()
    correct, total, loss = 0, 0, 0.0
    with torch.no_grad():
        for images, labels in loader:
            outputs = model(images)
            loss += criterion(outputs, labels).item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
            total += len(labels)
    model.train()
    return correct / total, loss / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--eval-every", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.005)
    args = parser.parse_args(argv)
    torch.manual_seed(int(os.environ.get("SEED", 0)))

    transform = Compose([Resize(IMAGE_SIZE), Normalize(MEAN, STD)])
    train_set = SynthCIFAR100(train=True, transform=transform)
    test_set = SynthCIFAR100(train=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    test_loader = DataLoader(test_set, batch_size=100)

    model = efficientnet_pretrained(num_classes=100)
    for name, param in model.named_parameters():
        if "bn" not in name:  # BUG: freezes every non-BatchNorm parameter, the new _fc too
            param.requires_grad = False
    optimizer = torch.optim.Adam(model._fc.parameters(), lr=args.lr)  # BUG: only the frozen head
    criterion = nn.CrossEntropyLoss()

    model.train()
    step, history = 0, []
    start = time.time()
    while step < args.steps:
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                acc, test_loss = evaluate(model, test_loader, criterion)
                history.append(acc)
                print(f"step {step:4d}  train loss {loss.item():.3f}  test loss {test_loss:.3f}"
                      f"  test acc {acc:.3f}  ({time.time() - start:.1f} s)")
            if step == args.steps:
                break

    metrics = {"test_acc": history[-1], "test_loss": test_loss, "train_loss": loss.item(),
               "steps": step, "seconds": round(time.time() - start, 2)}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer,
            "train_loader": train_loader, "test_loader": test_loader}


if __name__ == "__main__":
    main()
