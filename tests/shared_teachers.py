"""The pretrained networks of ../shared as torch modules, for tests and benchmarks to write as
teacher files of any format: the advertorch MNIST LeNet-5 (no BatchNorm, inputs in [0, 1]) and
the akamaster CIFAR-10 ResNets (BatchNorm; with `normalised`, the ImageNet-style normalisation
folded in front, so they too take images in [0, 1])."""
from pathlib import Path

import torch
from torch import nn

from edgekd.students import create_student

CIFAR_MEAN, CIFAR_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
RESNET_FILES = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
                56: "resnet56-4bfd9763.th"}


class AdvertorchLeNet5(nn.Module):
    """The shared MNIST teacher's architecture: two conv + max-pool stages, two linear layers, no BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
        self.linear1, self.linear2 = nn.Linear(7 * 7 * 64, 200), nn.Linear(200, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.linear2(torch.relu(self.linear1(x.flatten(1))))


class Normalised(nn.Module):
    """`net` behind a per-channel normalisation: images in [0, 1] in, logits out."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def advertorch_lenet5(shared: Path) -> nn.Module:
    """98.89 % on the MNIST test set."""
    model = AdvertorchLeNet5()
    model.load_state_dict(torch.load(shared / "teachers/mnist-lenet5-advertorch/mnist_lenet5_clntrained.pt",
                                     map_location="cpu", weights_only=True))
    return model.eval()


def cifar_resnet(shared: Path, depth: int, normalised: bool = False) -> nn.Module:
    """91.73 / 92.63 / 93.10 / 93.39 % on the CIFAR-10 test set for depth 20 / 32 / 44 / 56."""
    state = torch.load(shared / "teachers/cifar10-resnet-akamaster" / RESNET_FILES[depth], map_location="cpu",
                       weights_only=True)["state_dict"]
    model = create_student(f"resnet{depth}", 3, 10, (32, 32))
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return (Normalised(model, CIFAR_MEAN, CIFAR_STD) if normalised else model).eval()
