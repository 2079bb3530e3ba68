"""A pipeline whose own hooks count module calls: a global forward hook over every module
and a forward hook on its head; its model prints from its forward. It prints the counts
after each optimizer step, so a run under invar must print the same lines as a plain run
(the static phase's forwards of meta copies and its graph capture must never reach the
user's hooks nor print)."""
import torch
from torch import nn

calls = {"global": 0, "head": 0}


def count_global(module, args, output):
    calls["global"] += 1


def count_head(module, args, output):
    calls["head"] += 1


class Talking(nn.Module):
    """Prints what it gets, like a debugging forward."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        print(f"forward {tuple(x.shape)}", flush=True)
        return self.head(self.body(x))


def main() -> None:
    torch.manual_seed(0)
    torch.nn.modules.module.register_module_forward_hook(count_global)
    model = Talking()
    model.head.register_forward_hook(count_head)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(4):
        x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        print(f"step {step} calls global={calls['global']} head={calls['head']}", flush=True)


if __name__ == "__main__":
    main()
