"""MobileNetV2 and MobileNetV3-Small from torchvision (random init), split into features and a
final Linear."""
import torch
import torchvision
from torch import nn

from . import STUDENTS
from .base import Student, is_small


class MobileNet(Student):
    """Rearranges a torchvision MobileNet: its `classifier` Sequential ends in the final Linear;
    the layers before it (dropout, and V3's hidden Linear + Hardswish) become part of the features."""

    def __init__(self, net, in_channels, small):
        super().__init__()
        stem = net.features[0][0]
        # A new first conv takes any channel count; stride 1 keeps small inputs from shrinking
        # to 1x1 before the last stage.
        net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size,
                                       1 if small else stem.stride, stem.padding, bias=False)
        nn.init.kaiming_normal_(net.features[0][0].weight, mode="fan_out")
        self.features = net.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        *head, self.classifier = net.classifier
        self.head = nn.Sequential(*head)
        self.num_features = self.classifier.in_features

    def forward_features(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


@STUDENTS.register("mobilenet_v2")
def mobilenet_v2(in_channels, num_classes, input_size):
    net = torchvision.models.mobilenet_v2(num_classes=num_classes)
    small = is_small(input_size)
    if small:
        # Also keep the first stride-2 block (features[2], 24 channels) at stride 1, as the CIFAR
        # MobileNetV2 does: overall stride 8 instead of 32.
        net.features[2].conv[1][0].stride = (1, 1)
    return MobileNet(net, in_channels, small)


@STUDENTS.register("mobilenet_v3_small")
def mobilenet_v3_small(in_channels, num_classes, input_size):
    net = torchvision.models.mobilenet_v3_small(num_classes=num_classes)
    return MobileNet(net, in_channels, is_small(input_size))
