# Transfer learning with a pretrained ResNet-18 on a pets-like 37-class image set.
# BUG (the "HW1" report): test images are normalised with mean 0 instead of the training
# means 0.49/0.48/0.44, so every test input is shifted by about three standard deviations.
import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from common import MEAN, NUM_BREEDS, PRETRAINED, STD, PetImages, normalize

WIDTH = 12  # ResNet-18 has 64; scaled down for two CPU cores
EPOCHS = 3
BATCH_SIZE = 64
LR_BACKBONE = 0.01
LR_HEAD = 0.05


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-18 layout (BasicBlock x [2, 2, 2, 2]) at a CPU-sized width."""

    def __init__(self, layers=(2, 2, 2, 2), width=WIDTH, num_classes=1000):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_pretrained():
    model = ResNet()
    state = torch.load(PRETRAINED, map_location="cpu")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          strict=False)
    return model


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for images, labels in loader:
            outputs = model(normalize(images, (0.0, 0.0, 0.0), STD))  # BUG: not the training MEAN
            loss += F.cross_entropy(outputs, labels, reduction="sum").item()
            correct += (outputs.argmax(1) == labels).sum().item()
            total += len(labels)
    return correct / total, loss / total


def main(argv=None):
    torch.manual_seed(int(os.environ.get("SEED", 0)))
    dataset = PetImages()
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(42)).tolist()
    n_train = int(0.75 * len(dataset))
    train_set = Subset(dataset, perm[:n_train])
    test_set = Subset(dataset, perm[n_train:])
    train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=128)

    model = resnet18_pretrained()
    model.fc = nn.Sequential(nn.Linear(WIDTH * 8, 128), nn.ReLU(inplace=True),
                             nn.Linear(128, NUM_BREEDS))
    backbone = [p for name, p in model.named_parameters() if not name.startswith("fc.")]
    optimizer = torch.optim.SGD([{"params": backbone, "lr": LR_BACKBONE},
                                 {"params": model.fc.parameters(), "lr": LR_HEAD}],
                                momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()

    start = time.time()
    for epoch in range(EPOCHS):
        model.train()
        running = 0.0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(normalize(images, MEAN, STD)), labels)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(labels)
        test_acc, test_loss = evaluate(model, test_loader)
        print(f"epoch {epoch + 1}: train loss {running / len(train_set):.3f}  "
              f"test loss {test_loss:.3f}  test acc {test_acc:.3f}  ({time.time() - start:.1f} s)")

    metrics = {"test_acc": test_acc, "test_loss": test_loss,
               "train_loss": running / len(train_set), "epochs": EPOCHS}
    print("METRICS " + json.dumps(metrics))
    return {"model": model, "metrics": metrics, "optimizer": optimizer,
            "train_loader": train_loader, "test_loader": test_loader}


if __name__ == "__main__":
    main()
