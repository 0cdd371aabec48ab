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


# Family names people type, and the member each stands for: (for inputs up to SMALL_INPUT pixels,
# above). The CIFAR-style networks keep small inputs' resolution in their stems; above that, the
# ImageNet-style ones.
FAMILIES = {
    "lenet": ("lenet5", "lenet5"),
    "resnet": ("resnet20", "resnet18"),
    "wrn": ("wrn16_2", "wrn16_2"),
    "wideresnet": ("wrn16_2", "wrn16_2"),
    "mobilenet": ("mobilenet_v2", "mobilenet_v2"),
    "mobilenet_v3": ("mobilenet_v3_small", "mobilenet_v3_small"),
}
SMALL_INPUT = 64


def resolve_student(name: str, input_shape) -> str:
    """The registered student `name` means: itself, or the member of a family that suits inputs
    of shape (C, H, W). Unknown names raise with the closest one."""
    if name in FAMILIES:
        small, large = FAMILIES[name]
        return small if max(input_shape[1:]) <= SMALL_INPUT else large
    if name not in STUDENTS:
        from ..registry import did_you_mean
        raise EdgekdError(f"unknown student '{name}'{did_you_mean(name, [*STUDENTS.names(), *FAMILIES])} "
                          f"(choose one of: {', '.join(STUDENTS.names())}; or a family: {', '.join(FAMILIES)})")
    return name


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
