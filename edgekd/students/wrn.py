"""Wide ResNets (Zagoruyko & Komodakis 2016), pre-activation, no dropout.

Layer names follow the reference implementation (xternalz/WideResNet-pytorch) that the data-free
distillation code bases (DAFL, ZSKT, CMI, Fast-DFKD) share, so their WRN checkpoints load as is.
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import STUDENTS
from .base import Student


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.convShortcut = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        # When the shape changes, the projection shortcut also takes the pre-activated input.
        shortcut = x if self.convShortcut is None else self.convShortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class NetworkBlock(nn.Module):
    def __init__(self, blocks, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(
            BasicBlock(in_planes, out_planes, stride),
            *[BasicBlock(out_planes, out_planes, 1) for _ in range(blocks - 1)],
        )

    def forward(self, x):
        return self.layer(x)


class WideResNet(Student):
    def __init__(self, depth, widen, in_channels, num_classes):
        super().__init__()
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(blocks, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(blocks, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(blocks, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.num_features = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def classifier(self):
        # The reference implementation calls the last layer `fc`; an alias keeps its state_dict.
        return self.fc

    def forward_features(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@STUDENTS.register("wrn16_1")
def wrn16_1(in_channels, num_classes, input_size):
    return WideResNet(16, 1, in_channels, num_classes)


@STUDENTS.register("wrn16_2")
def wrn16_2(in_channels, num_classes, input_size):
    return WideResNet(16, 2, in_channels, num_classes)


@STUDENTS.register("wrn40_2")
def wrn40_2(in_channels, num_classes, input_size):
    return WideResNet(40, 2, in_channels, num_classes)
