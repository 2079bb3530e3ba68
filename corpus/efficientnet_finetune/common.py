"""EfficientNet-b0-like network and a CIFAR-100-like synthetic image set.

The network keeps the names of the `efficientnet_pytorch` package that the forum post
used (`_conv_stem`, `_bn0`, `_blocks`, `_conv_head`, `_bn1`, `_fc`), so that the post's
freezing loop (`if "bn" not in name`) means here what it meant there. Widths and depth
are scaled down for two CPU cores; the network is built for 32x32 inputs (IMAGE_SIZE).
"""
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

IMAGE_SIZE = 32  # the resolution the network was (pre)trained for
MEAN = (0.49, 0.48, 0.44)  # per-channel statistics of the training images
STD = (0.20, 0.23, 0.18)
TINT = torch.tensor([0.9, 0.97, 0.88])  # the colour balance of the synthetic "camera"
PRETRAINED = Path(__file__).resolve().parent / "pretrained.pt"

# (expand ratio, kernel, stride, in channels, out channels): b0's stages, thinned.
BLOCKS = [
    (1, 3, 2, 8, 8),
    (6, 3, 2, 8, 12),
    (6, 5, 2, 12, 20),
    (6, 3, 1, 20, 32),
    (6, 5, 2, 32, 40),
]


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise conv, squeeze-excite, 1x1 project."""

    def __init__(self, expand, kernel, stride, cin, cout, se_ratio=0.25):
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2,
                                         groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid)
        squeezed = max(1, int(cin * se_ratio))
        self._se_reduce = nn.Conv2d(mid, squeezed, 1)
        self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout)
        self._swish = nn.SiLU()
        self.id_skip = stride == 1 and cin == cout

    def forward(self, inputs):
        x = inputs
        if self.expand != 1:
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        s = F.adaptive_avg_pool2d(x, 1)
        s = self._se_expand(self._swish(self._se_reduce(s)))
        x = torch.sigmoid(s) * x
        x = self._bn2(self._project_conv(x))
        if self.id_skip:
            x = x + inputs
        return x


class EfficientNet(nn.Module):
    def __init__(self, num_classes=100, head_channels=128, dropout=0.2):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, BLOCKS[0][3], 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(BLOCKS[0][3])
        self._blocks = nn.ModuleList(MBConvBlock(*cfg) for cfg in BLOCKS)
        self._conv_head = nn.Conv2d(BLOCKS[-1][4], head_channels, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head_channels)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)
        self._swish = nn.SiLU()

    def forward(self, x):
        x = self._swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def efficientnet_pretrained(num_classes=100):
    """The network with the shipped backbone weights; the classifier `_fc` is new."""
    model = EfficientNet(num_classes)
    state = torch.load(PRETRAINED, map_location="cpu")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("_fc.") for k in missing), (missing, unexpected)
    return model


# ---------------------------------------------------------------- data

def class_table(num_classes, seed):
    """Per-class grating orientation, frequency and a foreground/background colour pair."""
    g = torch.Generator().manual_seed(seed)
    orient = torch.arange(num_classes) % 10 * (math.pi / 10)
    palette = torch.arange(num_classes) // 10
    palettes = torch.rand(max(10, int(palette.max()) + 1), 2, 3, generator=g) * 0.8 + 0.1
    freq = 2.0 + 3.0 * torch.rand(num_classes, generator=g)
    return {"orient": orient + 0.05 * torch.randn(num_classes, generator=g),
            "freq": freq, "fg": palettes[palette, 0], "bg": palettes[palette, 1]}


def render(labels, table, seed, size=32):
    """Oriented coloured gratings with a random phase, a distractor blob and noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    theta = table["orient"][labels] + 0.08 * torch.randn(n, generator=g)
    freq = table["freq"][labels] * (1 + 0.1 * torch.randn(n, generator=g))
    phase = 2 * math.pi * torch.rand(n, generator=g)
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    wave = 0.5 + 0.5 * torch.sin(math.pi * freq[:, None, None] * proj + phase[:, None, None])
    fg, bg = table["fg"][labels], table["bg"][labels]
    img = wave[:, None] * fg[:, :, None, None] + (1 - wave[:, None]) * bg[:, :, None, None]
    # a distractor blob of random colour at a random place
    cx, cy = torch.rand(2, n, generator=g) * 1.6 - 0.8
    blob = torch.exp(-((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2) / 0.08)
    colour = torch.rand(n, 3, generator=g)
    img = img * (1 - blob[:, None]) + colour[:, :, None, None] * blob[:, None]
    img = img * TINT[:, None, None] + 0.08 * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


def make_images(num_classes, per_class, seed, table_seed):
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    return render(labels, class_table(num_classes, table_seed), seed), labels


class SynthCIFAR100(Dataset):
    """100 classes of 32x32 RGB images (like CIFAR-100), generated once from a fixed seed."""

    def __init__(self, train=True, transform=None):
        self.data, self.targets = make_images(100, 10 if train else 3, seed=11 if train else 12,
                                              table_seed=100)
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.data[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])


class Resize:
    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        if x.shape[-1] == self.size:
            return x
        return F.interpolate(x[None], size=(self.size, self.size), mode="bilinear",
                             align_corners=False)[0]


class Normalize:
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean)[:, None, None]
        self.std = torch.tensor(std)[:, None, None]

    def __call__(self, x):
        return (x - self.mean) / self.std


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x
