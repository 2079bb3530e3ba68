"""A pets-like image set: 37 "breeds" of 32x32 animals on cluttered backgrounds.

Each breed has a body shape (ellipse aspect and tilt), a coat colour pair and a coat
texture (stripe frequency and angle); each image places one animal at a random position
and scale on a random smooth background, with sensor noise. Generated once from fixed
seeds: the data never changes with the training seed, like a real dataset on disk.
"""
import math
from pathlib import Path

import torch
from torch.utils.data import Dataset

NUM_BREEDS = 37
MEAN = (0.49, 0.48, 0.44)  # per-channel statistics of the training images
STD = (0.14, 0.13, 0.13)
PRETRAINED = Path(__file__).resolve().parent / "pretrained.pt"


def breed_table(num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "aspect": 1.0 + 1.2 * torch.rand(num_classes, generator=g),
        "tilt": math.pi * torch.rand(num_classes, generator=g),
        "coat": 0.15 + 0.75 * torch.rand(num_classes, 2, 3, generator=g),
        "freq": 1.0 + 5.0 * torch.rand(num_classes, generator=g),
        "stripe": math.pi * torch.rand(num_classes, generator=g),
    }


def render(labels, table, seed, size=32):
    """Images in [0, 1], shape (N, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    c = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    xx, yy = xx[None], yy[None]

    def per_image(t):
        return t[:, None, None]

    # background: a smooth random colour gradient
    tint = torch.tensor([1.0, 0.97, 0.86])  # warm indoor light, like most pet photos
    bg0, bg1 = (0.25 + 0.5 * torch.rand(2, n, 3, generator=g)) * tint
    angle = 2 * math.pi * torch.rand(n, generator=g)
    ramp = 0.5 + 0.5 * (xx * per_image(torch.cos(angle)) + yy * per_image(torch.sin(angle))) / 1.5
    img = ramp[:, None] * bg0[:, :, None, None] + (1 - ramp[:, None]) * bg1[:, :, None, None]
    # the animal: a tilted ellipse with a striped two-colour coat
    cx, cy = 0.5 * (torch.rand(2, n, generator=g) - 0.5)
    scale = 0.45 + 0.2 * torch.rand(n, generator=g)
    tilt = table["tilt"][labels] + 0.15 * torch.randn(n, generator=g)
    u = (xx - per_image(cx)) * per_image(torch.cos(tilt)) + (yy - per_image(cy)) * per_image(torch.sin(tilt))
    v = -(xx - per_image(cx)) * per_image(torch.sin(tilt)) + (yy - per_image(cy)) * per_image(torch.cos(tilt))
    aspect = per_image(table["aspect"][labels])
    r = (u / per_image(scale)) ** 2 + (v * aspect / per_image(scale)) ** 2
    body = torch.sigmoid((1 - r) * 8)
    stripe_angle = per_image(table["stripe"][labels])
    phase = per_image(2 * math.pi * torch.rand(n, generator=g))
    coat = 0.5 + 0.5 * torch.sin(math.pi * per_image(table["freq"][labels])
                                 * (u * torch.cos(stripe_angle) + v * torch.sin(stripe_angle)) / per_image(scale) + phase)
    c0, c1 = table["coat"][labels, 0], table["coat"][labels, 1]
    fur = coat[:, None] * c0[:, :, None, None] + (1 - coat[:, None]) * c1[:, :, None, None]
    img = body[:, None] * fur + (1 - body[:, None]) * img
    img = img + 0.06 * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


class PetImages(Dataset):
    """All images of the pets-like set; train and test are Subsets of it."""

    def __init__(self, per_class=40, seed=21, table_seed=37, num_classes=NUM_BREEDS):
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        self.targets = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
        self.data = render(self.targets, breed_table(num_classes, table_seed), seed)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])


def normalize(images, mean, std):
    """Per-channel normalisation of a batch (N, 3, H, W)."""
    mean = torch.tensor(mean, dtype=images.dtype)[:, None, None]
    std = torch.tensor(std, dtype=images.dtype)[:, None, None]
    return (images - mean) / std
