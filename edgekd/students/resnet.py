"""ImageNet-style ResNet-18/34 (BasicBlock), the usual students of data-free distillation papers.

Built on torchvision's ResNet so the parameter names match torchvision's checkpoints.
"""
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from . import STUDENTS
from .base import Student, is_small


class ResNet(Student, torchvision.models.ResNet):
    def __init__(self, layers, in_channels, num_classes, input_size):
        super().__init__(BasicBlock, layers, num_classes=num_classes)
        if is_small(input_size):
            # CIFAR stem: 3x3 stride 1 and no max-pool, so 32x32 inputs end at 4x4, not 1x1.
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.num_features = self.fc.in_features

    @property
    def classifier(self):
        # torchvision calls the last layer `fc`; an alias keeps its state_dict layout.
        return self.fc

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


@STUDENTS.register("resnet18")
def resnet18(in_channels, num_classes, input_size):
    return ResNet([2, 2, 2, 2], in_channels, num_classes, input_size)


@STUDENTS.register("resnet34")
def resnet34(in_channels, num_classes, input_size):
    return ResNet([3, 4, 6, 3], in_channels, num_classes, input_size)
