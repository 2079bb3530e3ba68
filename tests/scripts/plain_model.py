"""Model for plain_train.py; includes a shape-dependent branch that torch.fx cannot trace."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, classes: int = 4, detach_features: bool = False) -> None:
        super().__init__()
        self.detach_features = detach_features
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Dropout(0.1))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.detach_features:
            h = h.detach()
        if h.shape[-1] > 4:  # shape-dependent control flow
            h = h.mean(dim=(2, 3))
        else:
            h = h.amax(dim=(2, 3))
        return self.head(h)


def make_model(classes: int = 4, detach_features: bool = False) -> Net:
    return Net(classes, detach_features)
