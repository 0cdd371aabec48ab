"""The student model zoo: one registry, one file per family (as in timm).

Every student is a `Student`: `forward_features(x)` gives the (B, num_features) penultimate vector,
`classifier` is the final Linear, and `forward(x) == classifier(forward_features(x))`.
"""
from torch import nn

from ..errors import EdgekdError
from ..measure import count_macs, count_params
from ..registry import Registry
from .base import Student  # noqa: F401  (re-exported: the contract students follow)

STUDENTS = Registry("student")

MIN_INPUT_SIZE = 28

# Imported after STUDENTS exists: each family module registers its builders on import.
from . import lenet, mobilenet, resnet, resnet_cifar, wrn  # noqa: E402,F401


def create_student(name, in_channels=3, num_classes=10, input_size=(32, 32)) -> nn.Module:
    builder = STUDENTS.get(name)
    input_size = tuple(int(s) for s in input_size)
    if min(input_size) < MIN_INPUT_SIZE:
        raise EdgekdError(f"input size {input_size[0]}x{input_size[1]} is too small for the students; "
                          f"resize inputs to at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
    if in_channels < 1 or num_classes < 1:
        raise EdgekdError(f"a student needs at least 1 input channel and 1 class, "
                          f"got {in_channels} channels and {num_classes} classes")
    return builder(in_channels, num_classes, input_size)


def describe_students(input_shape, num_classes) -> list[dict]:
    """Size and cost of every student for inputs of shape (C, H, W)."""
    channels, height, width = input_shape
    rows = []
    for name in STUDENTS.names():
        model = create_student(name, channels, num_classes, (height, width)).eval()
        rows.append({"name": name, "params": count_params(model), "macs": count_macs(model, input_shape)})
    return rows
