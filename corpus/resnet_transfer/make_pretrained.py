"""Makes `pretrained.pt`: the ResNet-18 backbone pre-trained on a different synthetic task.

The stand-in for ImageNet pre-training: 24 other "species" drawn by the same renderer as
the pets-like set (different shapes, coats and textures), 12,000 images. Deterministic;
takes under a minute on two CPU cores. The training scripts only load the result.
"""
import torch
import torch.nn.functional as F

from common import MEAN, PRETRAINED, STD, PetImages, normalize
from reference import ResNet


def main():
    torch.manual_seed(1234)
    train = PetImages(per_class=500, seed=3, table_seed=2024, num_classes=24)
    test = PetImages(per_class=20, seed=4, table_seed=2024, num_classes=24)
    x, y = normalize(train.data, MEAN, STD), train.targets
    model = ResNet(num_classes=24)
    steps = 800
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    step = 0
    while step < steps:
        for idx in torch.randperm(len(y)).split(64):
            if step == steps:
                break
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    model.eval()
    with torch.no_grad():
        acc = (model(normalize(test.data, MEAN, STD)).argmax(1) == test.targets).float().mean().item()
    print(f"pre-training accuracy on held-out images: {acc:.3f}")
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()
             if not k.startswith("fc.")}
    torch.save(state, PRETRAINED)


if __name__ == "__main__":
    main()
