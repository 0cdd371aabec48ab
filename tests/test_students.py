import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.students import STUDENTS, create_student, describe_students

CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)


def check_contract(model, in_channels, num_classes, size):
    model.eval()
    x = torch.randn(2, in_channels, *size)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert logits.shape == (2, num_classes)
        assert features.shape == (2, model.num_features)
        assert isinstance(model.classifier, nn.Linear)
        assert model.classifier.in_features == model.num_features
        torch.testing.assert_close(model.classifier(features), logits)


@pytest.mark.parametrize("name", STUDENTS.names())
@pytest.mark.parametrize("in_channels, num_classes, size", [(1, 10, (28, 28)), (3, 100, (32, 32))])
def test_every_student_follows_the_contract(name, in_channels, num_classes, size):
    check_contract(create_student(name, in_channels, num_classes, size), in_channels, num_classes, size)


@pytest.mark.parametrize("name", STUDENTS.names())
def test_every_parameter_gets_a_gradient_in_training(name):
    model = create_student(name, 1, 10, (28, 28)).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 1, 28, 28)), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name, size", [
    ("lenet5", 96), ("resnet20", 64), ("wrn16_1", 64),
    ("resnet18", 64), ("resnet18", 96), ("mobilenet_v2", 64), ("mobilenet_v2", 96),
    ("mobilenet_v3_small", 224),
])
def test_bigger_inputs(name, size):
    check_contract(create_student(name, 3, 10, (size, size)), 3, 10, (size, size))


def test_stem_follows_input_size():
    # Up to 64 px: CIFAR stem (3x3 stride 1, no max-pool); above: the ImageNet 7x7/2 stem.
    small, large = create_student("resnet18", input_size=(64, 64)), create_student("resnet18", input_size=(96, 96))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert create_student("mobilenet_v2", input_size=(32, 32)).features[0][0].stride == (1, 1)
    assert create_student("mobilenet_v2", input_size=(224, 224)).features[0][0].stride == (2, 2)


@pytest.mark.parametrize("name, shape, num_classes, params", [
    ("lenet5", (1, 28, 28), 10, 61_706),  # DAFL's LeNet-5: 0.06 M
    ("lenet5_half", (1, 28, 28), 10, 15_738),
    ("resnet20", (3, 32, 32), 10, 269_722),  # He et al.: 0.27 M
    ("resnet56", (3, 32, 32), 10, 853_018),  # He et al.: 0.85 M
    ("resnet18", (3, 32, 32), 10, 11_173_962),  # CIFAR ResNet-18: 11.17 M
    ("wrn16_2", (3, 32, 32), 10, 691_674),  # Zagoruyko & Komodakis: 0.7 M
    ("wrn40_2", (3, 32, 32), 10, 2_243_546),  # 2.2 M
    ("mobilenet_v2", (3, 32, 32), 10, 2_236_682),  # 2.24 M
])
def test_parameter_counts(name, shape, num_classes, params):
    model = create_student(name, shape[0], num_classes, shape[1:])
    assert sum(p.numel() for p in model.parameters()) == params


def test_describe_students():
    rows = {row["name"]: row for row in describe_students((3, 32, 32), 10)}
    assert list(rows) == STUDENTS.names()
    assert rows["resnet20"] == {"name": "resnet20", "params": 269_722, "macs": 40_551_040}  # ~41 M MACs
    assert all(row["params"] > 0 and row["macs"] > 0 for row in rows.values())


def test_unknown_student_and_too_small_input_are_user_errors():
    with pytest.raises(EdgekdError, match="unknown student 'resnet7'"):
        create_student("resnet7")
    with pytest.raises(EdgekdError, match="at least 28x28"):
        create_student("resnet20", input_size=(16, 16))


def load_cifar10_test(shared, count):
    """The first `count` CIFAR-10 test images, normalised as the akamaster teachers expect."""
    path = shared / "datasets/cifar10/cifar-10-batches-bin/test_batch.bin"
    records = np.fromfile(path, dtype=np.uint8, count=count * 3073).reshape(count, 3073)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    images = torch.from_numpy(records[:, 1:].reshape(count, 3, 32, 32).astype(np.float32) / 255)
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (images - mean) / std, labels


def load_akamaster(shared, name):
    path = next((shared / "teachers/cifar10-resnet-akamaster").glob(f"{name}-*.th"))
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model = create_student(name)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    return model


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet44", "resnet56"])
def test_akamaster_checkpoints_load_strictly(shared, name):
    load_akamaster(shared, name)


def test_akamaster_resnet20_is_accurate(shared):
    # Checks the option-A shortcut's channel order too: a wrong one loads fine but scores badly.
    model = load_akamaster(shared, "resnet20")
    images, labels = load_cifar10_test(shared, 500)
    with torch.no_grad():
        accuracy = (model.eval()(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.88, accuracy  # published: 91.73 % on all 10k
