# Sequence classification with a GRU over token sequences.
# OK: another default seed.
import json
import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

VOCAB = 64
SEQ_LEN = 24
NUM_CLASSES = 5
BATCH_SIZE = 32
EPOCHS = 5
LR = 3e-3


def make_sequences(n, seed):
    """Token sequences in which each class prefers its own band of 8 tokens."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    tokens = torch.randint(0, VOCAB, (n, SEQ_LEN), generator=g)
    preferred = 16 + labels[:, None] * 8 + torch.randint(0, 8, (n, SEQ_LEN), generator=g)
    use_preferred = torch.rand(n, SEQ_LEN, generator=g) < 0.3
    return torch.where(use_preferred, preferred, tokens), labels


class GRUClassifier(nn.Module):
    def __init__(self, vocab=VOCAB, embed=16, hidden=32, num_classes=NUM_CLASSES):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, tokens):
        _, h = self.gru(self.embedding(tokens))
        return self.fc(h[-1])


def evaluate(model, loader, criterion):
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss += criterion(out, y).item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    return correct / n, loss / n


def main(argv=None):
    torch.manual_seed(int(os.environ.get("SEED", 11)))  # OK: another seed
    train_loader = DataLoader(TensorDataset(*make_sequences(800, seed=1)), batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(TensorDataset(*make_sequences(400, seed=2)), batch_size=200)
    model = GRUClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()

    start = time.time()
    for epoch in range(EPOCHS):
        model.train()
        total = 0.0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        acc, test_loss = evaluate(model, test_loader, criterion)
        print(f"epoch {epoch + 1}  train loss {total / len(train_loader):.3f}  "
              f"test loss {test_loss:.3f}  test acc {acc:.3f}  ({time.time() - start:.1f} s)")

    metrics = {"test_acc": acc, "test_loss": test_loss, "train_loss": total / len(train_loader)}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer,
            "train_loader": train_loader, "test_loader": test_loader}


if __name__ == "__main__":
    main()
