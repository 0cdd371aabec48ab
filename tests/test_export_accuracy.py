"""Exported int8 files keep the float model's accuracy with the defaults a user gets: calibrated
without data (synthesized from the model's BatchNorm statistics), scored here on real images.
The shared CIFAR-10 ResNet-20 as a user would hand it in: a torch.export archive that normalises
inside and takes images in [0, 1]. int8 TFLite of it once scored 17 % (batched runs of a batch-1
file kept sample 0's shortcut for every sample); this test fails on that."""
import numpy as np
import pytest
import torch

from edgekd.data import load_dataset
from edgekd.exporter import onnx_format, tflite_format
from edgekd.exporter.core import export
from edgekd.exporter.source import load_source
from edgekd.teacher import save_export
from shared_teachers import cifar_resnet

SCORED = 1000  # CIFAR-10 test images


def test_int8_resnet20_keeps_its_accuracy_without_calibration_data(shared, tmp_path):
    model = cifar_resnet(shared, 20, normalised=True)
    path = tmp_path / "resnet20.pt2"
    save_export(model, (3, 32, 32), path)  # a dynamic batch: export runs the graph on batches
    result = export(load_source(path), tmp_path / "export", ["onnx", "tflite"], ["int8"], set(), log=lambda m: None)
    assert all("BatchNorm" in a["metadata"]["calibration"] for a in result["artifacts"] if a["precision"] == "int8")

    test = load_dataset(shared / "datasets/cifar10", "test", limit=SCORED)
    x, y = test.x.numpy(), test.y.numpy()
    with torch.no_grad():
        reference = model(test.x).argmax(1).numpy()
    float_top1 = 100 * np.mean(reference == y)
    assert float_top1 > 88
    for fmt, runtime in (("onnx", onnx_format), ("tflite", tflite_format)):
        predicted = runtime.Runner(tmp_path / "export" / f"resnet20.int8.{fmt}")(x).argmax(1)
        assert 100 * np.mean(predicted == y) == pytest.approx(float_top1, abs=1.0), fmt
        if fmt == "tflite":
            assert 100 * np.mean(predicted == reference) >= 97
