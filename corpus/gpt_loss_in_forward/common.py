"""A minimal GPT trainer in the style of nanoGPT/minGPT: the model computes its loss in
forward (`logits, loss = model(idx, targets)`), batches are drawn by hand from one token
array (`get_batch`: random offsets, targets = the inputs shifted by one), AdamW, and a
loss estimate on held-out data every few iterations. The text is a token stream of a
fixed random Markov chain with a long-range rule (every 8th token repeats the token 4
back), generated here."""
import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 48
BLOCK = 16
N_EMBD = 32
N_HEAD = 2
N_LAYER = 2
BATCH = 16
MAX_ITERS = 120
EVAL_INTERVAL = 10
EVAL_ITERS = 4
LR = 2e-2


def token_array(n, seed):
    g = torch.Generator().manual_seed(99)  # the language: the same for every seed
    logits = torch.randn(VOCAB, VOCAB, generator=g) * 2.0
    probs = torch.softmax(logits, dim=1)
    g = torch.Generator().manual_seed(seed)
    draws = torch.rand(n, generator=g)
    cdf = probs.cumsum(1)
    out, tok = [], 0
    for i in range(n):
        tok = out[i - 4] if i % 8 == 7 and i >= 4 else int(torch.searchsorted(cdf[tok], draws[i]).clamp(max=VOCAB - 1))
        out.append(tok)
    return torch.tensor(out, dtype=torch.long)


class CausalSelfAttention(nn.Module):
    def __init__(self, causal=True):
        super().__init__()
        self.c_attn = nn.Linear(N_EMBD, 3 * N_EMBD)
        self.c_proj = nn.Linear(N_EMBD, N_EMBD)
        self.causal = causal

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(N_EMBD, dim=2)
        q, k, v = (t.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, causal=True):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(N_EMBD), nn.LayerNorm(N_EMBD)
        self.attn = CausalSelfAttention(causal)
        self.mlp = nn.Sequential(nn.Linear(N_EMBD, 4 * N_EMBD), nn.GELU(), nn.Linear(4 * N_EMBD, N_EMBD))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, causal=True):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, N_EMBD)
        self.wpe = nn.Embedding(BLOCK, N_EMBD)
        self.h = nn.ModuleList([Block(causal) for _ in range(N_LAYER)])
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.lm_head = nn.Linear(N_EMBD, VOCAB, bias=False)

    def forward(self, idx, targets=None):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def get_batch(data, shift=1):
    ix = torch.randint(len(data) - BLOCK - 1, (BATCH,))
    x = torch.stack([data[i:i + BLOCK] for i in ix])
    y = torch.stack([data[i + shift:i + shift + BLOCK] for i in ix])
    return x, y


@torch.no_grad()
def estimate_loss(model, data):
    model.eval()
    losses = [model(*get_batch(data))[1].item() for _ in range(EVAL_ITERS)]
    model.train()
    return sum(losses) / len(losses)


def run(argv=None, seed=0, lr=LR, shift=1, causal=True):
    torch.manual_seed(int(os.environ.get("SEED", seed)))
    data = token_array(20000, seed=1)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    model = GPT(causal)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    start = time.time()
    for it in range(1, MAX_ITERS + 1):
        xb, yb = get_batch(train_data, shift)
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it % EVAL_INTERVAL == 0:
            print(f"iter {it:4d}  train loss {loss.item():.3f}  val loss {estimate_loss(model, val_data):.3f}  "
                  f"({time.time() - start:.1f} s)")
    val_loss = estimate_loss(model, val_data)
    model.eval()
    with torch.no_grad():
        xv, yv = get_batch(val_data)
        test_acc = (model(xv)[0].argmax(-1) == yv).float().mean().item()  # next-token accuracy
    metrics = {"test_acc": test_acc, "val_loss": val_loss, "train_loss": loss.item()}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics}
