"""The contract every student follows, so distillation methods can treat all families alike."""
from torch import nn


class Student(nn.Module):
    """A classifier split into `forward_features` (B, num_features) and a final `classifier` Linear.

    Feature-based distillation losses need the penultimate vector, so every family exposes it the
    same way instead of each method reaching into family-specific layers.
    """

    num_features: int

    def forward_features(self, x):
        raise NotImplementedError

    def forward(self, x):
        return self.classifier(self.forward_features(x))


def is_small(input_size) -> bool:
    """Inputs up to 64 px (MNIST, CIFAR, Tiny-ImageNet) get the low-stride stems of the CIFAR
    literature; an ImageNet stem would shrink them to a few pixels before the first block."""
    return min(input_size) <= 64
