"""Topic classification of token sequences with a 1-d convolutional text classifier.

OK: another default seed.
"""
import argparse
import json
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

VOCAB = 300
SEQ_LEN = 48
NUM_TOPICS = 6


def make_documents(n, seed):
    """Documents of 48 tokens: common words (Zipf-like) mixed with their topic's keywords."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.randint(0, NUM_TOPICS, (n,), generator=g)
    zipf = 1.0 / torch.arange(1, VOCAB - 120 + 1, dtype=torch.float)
    common = torch.multinomial(zipf, n * SEQ_LEN, replacement=True, generator=g).view(n, SEQ_LEN)
    keywords = VOCAB - 120 + topics[:, None] * 20 + torch.randint(0, 20, (n, SEQ_LEN), generator=g)
    is_keyword = torch.rand(n, SEQ_LEN, generator=g) < 0.2
    return torch.where(is_keyword, keywords, common), topics


class TextCNN(nn.Module):
    def __init__(self, vocab_size, embed_dim=32, channels=64, num_classes=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.conv = nn.Conv1d(embed_dim, channels, kernel_size=5, padding=2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, tokens):
        x = self.embedding(tokens).transpose(1, 2)
        x = self.pool(self.relu(self.conv(x))).squeeze(2)
        return self.classifier(x)


def evaluate(model, loader):
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    return correct / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(int(os.environ.get("SEED", 9)))  # OK: another seed

    train_loader = DataLoader(TensorDataset(*make_documents(768, seed=1)), batch_size=args.batch_size,
                              shuffle=True)
    test_loader = DataLoader(TensorDataset(*make_documents(384, seed=2)), batch_size=128)

    model = TextCNN(VOCAB)
    model.classifier = nn.Linear(model.classifier.in_features, NUM_TOPICS)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()

    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item()
        acc = evaluate(model, test_loader)
        print(f"epoch {epoch + 1}: train loss {running / len(train_loader):.3f}  test acc {acc:.3f}")

    metrics = {"test_acc": acc, "train_loss": running / len(train_loader)}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer,
            "train_loader": train_loader, "test_loader": test_loader}


if __name__ == "__main__":
    main()
