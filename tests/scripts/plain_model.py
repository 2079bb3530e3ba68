"""Model for plain_train.py; includes a shape-dependent branch that torch.fx cannot trace."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Dropout(0.1))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if h.shape[-1] > 4:  # shape-dependent control flow
            h = h.mean(dim=(2, 3))
        else:
            h = h.amax(dim=(2, 3))
        return self.head(h)


def make_model() -> Net:
    return Net()
