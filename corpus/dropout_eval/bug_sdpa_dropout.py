# Sentiment classification of review-like token sequences with a small Transformer encoder.
# BUG (huggingface/transformers PR 33844, also nanoGPT PR 240): the attention passes its
# dropout probability to F.scaled_dot_product_attention unconditionally; a functional call
# does not know about model.eval(), so attention weights are dropped during evaluation too.
import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from common import NUM_CLASSES, SEQ_LEN, VOCAB, Reviews

CONFIG = dict(dim=32, heads=4, layers=2, dropout=0.2, lr=3e-3, batch_size=32, epochs=8)


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout)  # BUG: not switched off in eval mode
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class SentimentTransformer(nn.Module):
    def __init__(self, dim, heads, layers, dropout):
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, SEQ_LEN, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, tokens):
        x = self.drop(self.tok_emb(tokens) + self.pos_emb[:, :tokens.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x).mean(1))


def evaluate(model, loader):
    model.eval()
    correct = n = 0
    loss = 0.0
    with torch.no_grad():
        for tokens, labels in loader:
            logits = model(tokens)
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            n += len(labels)
    return correct / n, loss / n


def main(argv=None):
    cfg = CONFIG
    torch.manual_seed(int(os.environ.get("SEED", 0)))
    train_loader = DataLoader(Reviews(640, seed=1), batch_size=cfg["batch_size"], shuffle=True)
    test_loader = DataLoader(Reviews(480, seed=2), batch_size=160)
    model = SentimentTransformer(cfg["dim"], cfg["heads"], cfg["layers"], cfg["dropout"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)

    for epoch in range(cfg["epochs"]):
        model.train()
        for tokens, labels in train_loader:
            loss = F.cross_entropy(model(tokens), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        acc, test_loss = evaluate(model, test_loader)
        print(f"epoch {epoch + 1}: train loss {loss.item():.3f}  val loss {test_loss:.3f}  val acc {acc:.3f}")

    metrics = {"test_acc": acc, "test_loss": test_loss, "train_loss": loss.item()}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer,
            "train_loader": train_loader, "test_loader": test_loader}


if __name__ == "__main__":
    main()
