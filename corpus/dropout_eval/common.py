"""Review-like token sequences with a 3-way sentiment label (negative, neutral, positive).

Tokens 0-19 are positive words, 20-39 negative words, 40-63 neutral filler and token 64 is
"not", which flips the next word. The label is the sign of the (negation-aware) count of
positive minus negative words, with a neutral band around zero.
"""
import torch
from torch.utils.data import Dataset

VOCAB = 65
NOT = 64
SEQ_LEN = 32
NUM_CLASSES = 3


def make_reviews(n, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = 40 + torch.randint(0, 24, (n, SEQ_LEN), generator=g)
    mood = torch.rand(n, 1, generator=g)  # share of positive among sentiment words
    is_sentiment = torch.rand(n, SEQ_LEN, generator=g) < 0.25
    positive = torch.rand(n, SEQ_LEN, generator=g) < mood
    word = torch.randint(0, 20, (n, SEQ_LEN), generator=g) + torch.where(positive, 0, 20)
    tokens = torch.where(is_sentiment, word, tokens)
    negate = (torch.rand(n, SEQ_LEN, generator=g) < 0.1) & torch.roll(is_sentiment, -1, dims=1)
    negate[:, -1] = False
    tokens = torch.where(negate, torch.full_like(tokens, NOT), tokens)
    polarity = torch.where(tokens < 20, 1, torch.where(tokens < 40, -1, 0))
    flipped = torch.roll(tokens == NOT, 1, dims=1)
    flipped[:, 0] = False
    score = torch.where(flipped, -polarity, polarity).sum(1)
    labels = torch.where(score <= -2, 0, torch.where(score >= 2, 2, 1))
    return tokens, labels


class Reviews(Dataset):
    def __init__(self, n, seed):
        self.tokens, self.labels = make_reviews(n, seed)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.tokens[i], self.labels[i]
