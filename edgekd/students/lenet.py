"""LeNet-5 as used by DAFL on MNIST, its half-width student, and a BatchNorm variant (a teacher
that BN-statistics methods can read)."""
import torch
from torch import nn

from . import STUDENTS
from .base import Student


class LeNet5(Student):
    def __init__(self, in_channels, num_classes, input_size, widths=(6, 16, 120, 84), batch_norm=False):
        super().__init__()
        c1, c2, f1, f2 = widths
        # DAFL feeds MNIST padded to 32x32; padding 28x28 inputs by 2 gives the same layer sizes.
        padding = 2 if min(input_size) < 32 else 0
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=padding), norm(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), norm(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = self._flat_size(in_channels, input_size)
        self.fc = nn.Sequential(nn.Linear(flat, f1), nn.ReLU(), nn.Linear(f1, f2), nn.ReLU())
        self.classifier = nn.Linear(f2, num_classes)
        self.num_features = f2

    @torch.no_grad()
    def _flat_size(self, in_channels, input_size) -> int:
        return self.features(torch.zeros(1, in_channels, *input_size)).shape[1]

    def forward_features(self, x):
        return self.fc(self.features(x))


@STUDENTS.register("lenet5")
def lenet5(in_channels, num_classes, input_size):
    return LeNet5(in_channels, num_classes, input_size)


@STUDENTS.register("lenet5_half")
def lenet5_half(in_channels, num_classes, input_size):
    return LeNet5(in_channels, num_classes, input_size, widths=(3, 8, 60, 42))


@STUDENTS.register("lenet5_bn")
def lenet5_bn(in_channels, num_classes, input_size):
    return LeNet5(in_channels, num_classes, input_size, batch_norm=True)
