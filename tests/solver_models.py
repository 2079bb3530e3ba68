"""Small CPU models for the solver tests and benchmark (ResNet-18-shaped, VGG with a
Flatten->Linear head that pins the input size, MLP, LSTM classifiers over token ids and
over feature sequences, an LSTMCell loop, a GRU with a fixed-batch initial state,
self-attention over token ids with a learned positional parameter, a Transformer encoder
layer)."""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class ResNet18(nn.Module):
    def __init__(self, classes: int = 37, width: int = 16):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyVGG(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.features(x)))


def mlp(features: int = 20, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, classes))


class LSTMClassifier(nn.Module):
    def __init__(self, vocab: int = 100, classes: int = 5):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.fc = nn.Linear(32, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(tokens))
        return self.fc(out[:, -1])


class SequenceLSTM(nn.Module):
    """[B, T, F] features -> LSTM -> last hidden state -> Linear."""

    def __init__(self, features: int = 6, hidden: int = 32, classes: int = 4):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.fc(h[-1])


class CellLoop(nn.Module):
    """An LSTMCell stepped by a Python loop over the sequence: torch's own symbolic path."""

    def __init__(self, features: int = 6, hidden: int = 8, classes: int = 4):
        super().__init__()
        self.cell = nn.LSTMCell(features, hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        return self.fc(state[0])


class FixedStateGRU(nn.Module):
    """A GRU given an initial state built for batch 8: other batch sizes really fail."""

    def __init__(self, features: int = 6, hidden: int = 16, classes: int = 3):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.register_buffer("h0", torch.zeros(1, 8, hidden))
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x, self.h0)
        return self.fc(h[-1])


class Branchy(nn.Module):
    """A shape-dependent Python branch and a data-dependent op (torch.nonzero)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 40:
            x = x[..., :40]
        n = torch.nonzero(x > 0).shape[0]
        return self.fc(x.mean(dim=-1, keepdim=True).expand(-1, 8)) + n


class PositionalAttention(nn.Module):
    """Token ids -> embedding + a learned [1, T, D] positional parameter (broadcast over the
    batch) -> nn.MultiheadAttention(batch_first) -> mean-pool -> Linear; returns a dict.
    The attention's in-projection sees a transposed view, so torch's symbolic path guards
    B != 1 (a contiguity test), though B=1 runs."""

    def __init__(self, vocab: int = 50, seq_len: int = 12, dim: int = 16, heads: int = 2, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, seq_len, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> dict:
        h = self.embed(tokens) + self.pos
        a, weights = self.attn(h, h, h, need_weights=True)
        return {"logits": self.head(self.norm(h + a).mean(dim=1)), "attn": weights}


class TinyEncoder(nn.Module):
    """Token ids -> embedding -> one nn.TransformerEncoderLayer -> mean-pool -> Linear; returns
    (logits, features). Any sequence length runs; torch's symbolic path guards T != 1."""

    def __init__(self, vocab: int = 50, dim: int = 16, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.enc = nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> tuple:
        h = self.enc(self.embed(tokens))
        return self.head(h.mean(dim=1)), h


class TinyGPT(nn.Module):
    """nanoGPT's call: `model(idx, targets)` -> (logits [B, T, V], loss or None); a causal
    mask buffer sized for `block` positions, sliced to T."""

    def __init__(self, vocab: int = 40, block: int = 16, dim: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(block, dim)
        self.register_buffer("mask", torch.tril(torch.ones(block, block)).bool())
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor = None):
        b, t = idx.shape
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = (q @ k.transpose(-2, -1)).masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
        logits = self.head(x + att @ v)
        if targets is None:
            return logits, None
        loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


class HiddenRNN(nn.Module):
    """The word-language-model call: `model(x, hidden)` -> (output, hidden); sequence-first
    input [T, B] token ids, hidden state [layers, B, H] made by `init_hidden(B)`."""

    def __init__(self, vocab: int = 30, dim: int = 8, hidden: int = 12, layers: int = 2):
        super().__init__()
        self.layers, self.hidden = layers, hidden
        self.emb = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, hidden, layers)
        self.dec = nn.Linear(hidden, vocab)

    def init_hidden(self, batch: int) -> torch.Tensor:
        return torch.zeros(self.layers, batch, self.hidden)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor):
        out, hidden = self.rnn(self.emb(x), hidden)
        return self.dec(out), hidden


class KeywordOutput:
    """A Hugging Face-like output object (not a dict): `.loss`, `.logits`."""

    def __init__(self, loss, logits):
        self.loss, self.logits = loss, logits


class KeywordClassifier(nn.Module):
    """A Hugging Face-style keyword-only forward:
    `model(input_ids=..., attention_mask=..., labels=...)` -> an object with `.logits`."""

    def __init__(self, vocab: int = 50, dim: int = 16, classes: int = 3):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor = None,
                labels: torch.Tensor = None) -> KeywordOutput:
        h = self.emb(input_ids)
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        logits = self.head(h.mean(dim=1))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return KeywordOutput(loss, logits)


class SeqFirstLSTM(nn.Module):
    """A sequence-first nn.LSTM over [T, B, F] features -> last hidden state -> Linear."""

    def __init__(self, features: int = 6, hidden: int = 16, classes: int = 4):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.fc(h[-1])
