"""The word-level language model of pytorch/examples (word_language_model/main.py), small:
an LSTM over a token stream batchified time-major (`[seq, batch]`), trained by a loop that
updates the parameters itself (`p.data.add_(p.grad, alpha=-lr)`, no torch.optim), with
gradient clipping, evaluation every few batches and the learning rate divided by 4 when
the validation loss stops improving. The data is a token stream from a fixed random
Markov chain (each token strongly prefers a few successors), generated here."""
import json
import math
import os
import time

import torch
from torch import nn

NTOKENS = 32
EMSIZE = 32
NHID = 64
BPTT = 20
BATCH_SIZE = 16
EVAL_BATCH_SIZE = 10
EVAL_EVERY = 10
EPOCHS = 2
CLIP = 0.25


def markov_stream(n, seed):
    """A token stream from a Markov chain whose rows put most mass on 3 successors."""
    g = torch.Generator().manual_seed(1234)  # the chain is the language: the same for every seed
    logits = torch.randn(NTOKENS, NTOKENS, generator=g)
    top = torch.topk(torch.rand(NTOKENS, NTOKENS, generator=g), 3, dim=1).indices
    logits.scatter_(1, top, 4.0)
    probs = torch.softmax(logits, dim=1)
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dtype=torch.long)
    tok = 0
    for i in range(n):
        tok = int(torch.multinomial(probs[tok], 1, generator=g))
        out[i] = tok
    return out


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous()


def get_batch(source, i):
    seq_len = min(BPTT, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


class RNNModel(nn.Module):
    def __init__(self, ntoken=NTOKENS, ninp=EMSIZE, nhid=NHID, dropout=0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nhid = nhid

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.decoder.out_features)
        return torch.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(1, bsz, self.nhid), weight.new_zeros(1, bsz, self.nhid))


def repackage_hidden(h):
    return tuple(v.detach() for v in h)


def evaluate(model, source, criterion, accuracy=False):
    """Mean validation loss (and next-token accuracy when asked)."""
    model.eval()
    total, correct, hidden = 0.0, 0, model.init_hidden(EVAL_BATCH_SIZE)
    with torch.no_grad():
        for i in range(0, source.size(0) - 1, BPTT):
            data, targets = get_batch(source, i)
            output, hidden = model(data, hidden)
            total += len(data) * criterion(output, targets).item()
            correct += (output.argmax(1) == targets).sum().item()
    loss = total / (len(source) - 1)
    return (loss, correct / ((len(source) - 1) * source.size(1))) if accuracy else loss


def train_step(model, data, targets, hidden, criterion, lr, zero_grad=True):
    """One step of the example's train(): the script updates the parameters itself."""
    if zero_grad:
        model.zero_grad()
    output, hidden = model(data, hidden)
    loss = criterion(output, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
    return loss, hidden


def run(argv=None, lr=20.0, zero_grad=True, seed=0):
    torch.manual_seed(int(os.environ.get("SEED", seed)))
    train_data = batchify(markov_stream(12000, seed=1), BATCH_SIZE)
    val_data = batchify(markov_stream(2000, seed=2), EVAL_BATCH_SIZE)
    model = RNNModel()
    criterion = nn.NLLLoss()
    best_val, step, start = None, 0, time.time()
    for epoch in range(EPOCHS):
        model.train()
        hidden = model.init_hidden(BATCH_SIZE)
        for i in range(0, train_data.size(0) - 1, BPTT):
            data, targets = get_batch(train_data, i)
            hidden = repackage_hidden(hidden)
            loss, hidden = train_step(model, data, targets, hidden, criterion, lr, zero_grad)
            step += 1
            if step % EVAL_EVERY == 0:
                val_loss = evaluate(model, val_data, criterion)
                model.train()
                if best_val is None or val_loss < best_val:
                    best_val = val_loss
                else:
                    lr /= 4.0  # anneal the learning rate when validation stops improving
                print(f"step {step:4d}  train loss {loss.item():.3f}  val loss {val_loss:.3f}  "
                      f"lr {lr:.3g}  ({time.time() - start:.1f} s)")
    val_loss, val_acc = evaluate(model, val_data, criterion, accuracy=True)
    metrics = {"test_acc": val_acc, "val_loss": val_loss, "val_ppl": math.exp(val_loss), "train_loss": loss.item()}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics}
