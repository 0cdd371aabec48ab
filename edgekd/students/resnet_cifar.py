"""CIFAR ResNets of He et al. 2016 (3 stages of 16/32/64 channels, option-A shortcuts).

Layer names follow akamaster/pytorch_resnet_cifar10, so its checkpoints (keys without `module.`)
load with strict=True.
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import STUDENTS
from .base import Student


class ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad the channels on both sides, in the
    order the published checkpoints were trained with."""

    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Student):
    def __init__(self, depth, in_channels, num_classes):
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, 1)
        self.layer2 = self._stage(16, 32, blocks, 2)
        self.layer3 = self._stage(32, 64, blocks, 2)
        self.linear = nn.Linear(64, num_classes)
        self.num_features = 64
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes, planes, blocks, stride):
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    @property
    def classifier(self):
        # The checkpoints call the last layer `linear`; an alias keeps the state_dict unchanged.
        return self.linear

    def forward_features(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # Adaptive pooling (the original pools a fixed 8x8) so any input size works.
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def _register(depth):
    @STUDENTS.register(f"resnet{depth}")
    def build(in_channels, num_classes, input_size):
        return CifarResNet(depth, in_channels, num_classes)


for _depth in (20, 32, 44, 56):
    _register(_depth)
