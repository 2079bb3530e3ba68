"""Makes `pretrained.pt`: the EfficientNet backbone pre-trained on a different synthetic task.

The stand-in for ImageNet pre-training: 40 classes of gratings whose colour palettes differ
from the fine-tuning set's. Deterministic; takes about half a minute on two CPU cores.
The fine-tuning scripts only load the result; they never pre-train.
"""
import torch
import torch.nn.functional as F

from common import EfficientNet, MEAN, PRETRAINED, STD, make_images


def main():
    torch.manual_seed(1234)
    x, y = make_images(40, 120, seed=5, table_seed=7)
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    xt, yt = make_images(40, 10, seed=6, table_seed=7)
    xt = (xt - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    model = EfficientNet(num_classes=40)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=600)
    step = 0
    while step < 600:
        for idx in torch.randperm(len(y)).split(64):
            if step == 600:
                break
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    model.eval()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    print(f"pre-training accuracy on held-out images: {acc:.3f}")
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()
             if not k.startswith("_fc.")}
    torch.save(state, PRETRAINED)


if __name__ == "__main__":
    main()
