"""edgekd export: real converters, real onnxruntime and LiteRT interpreters, small models."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.exporter import onnx_format, tflite_format
from edgekd.exporter.core import export
from edgekd.exporter.formats import plan
from edgekd.exporter.source import load_source
from edgekd.teacher import save_export
from test_distill import edgekd_here

FAST = dict(calib_size=16, synth_steps=10)


class TinyBN(nn.Module):
    """A small CNN with BatchNorm (so calibration can be synthesized from its statistics)."""

    def __init__(self, channels=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


def _trained_bn(model):
    """BatchNorm statistics that are not the identity, as in a trained model."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(64, 3, 16, 16) * 0.8 + 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny.pt2"
    torch.manual_seed(0)  # its weights, whatever ran before in this process (the CLI runs in it too)
    save_export(_trained_bn(TinyBN()), (3, 16, 16), path, {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]})
    return path


def _cli(capfd, *args):
    return edgekd_here(capfd, *args)


def test_plan_checks_flags_against_the_format_table():
    pairs = plan(["onnx", "tflite"], ["fp16", "int8"], {"int8_io"})
    assert [(f.name, p) for f, p in pairs] == [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"),
                                               ("tflite", "fp16"), ("tflite", "int8")]
    with pytest.raises(EdgekdError, match="fp16 is available for tflite only"):
        plan(["onnx"], ["fp16"], set())
    with pytest.raises(EdgekdError, match="--int8-io applies to tflite only"):
        plan(["onnx"], ["int8"], {"int8_io"})
    with pytest.raises(EdgekdError, match="add --int8"):
        plan(["tflite"], ["fp16"], {"int8_io"})


def test_bare_model_all_precisions_bn_synthesis(tiny_pt2, tmp_path):
    source = load_source(tiny_pt2)
    out = tmp_path / "out"
    results = export(source, out, ["onnx", "tflite"], ["fp16", "dynamic-int8", "int8"], set(), log=lambda m: None,
                     **FAST)["artifacts"]
    names = sorted(Path(r["path"]).name for r in results)
    assert names == ["tiny.dynamic-int8.onnx", "tiny.dynamic-int8.tflite", "tiny.fp16.tflite", "tiny.fp32.onnx",
                     "tiny.fp32.tflite", "tiny.int8.onnx", "tiny.int8.tflite"]
    report = json.loads((out / "export.json").read_text())
    for art in report["artifacts"]:
        assert set(art) == {"path", "format", "precision", "size_bytes", "agreement", "top1", "latency_ms", "ops",
                            "metadata", "agreement_synthetic", "max_abs_diff"}
        assert Path(art["path"]).is_file() and art["top1"] is None and art["latency_ms"] > 0
        assert art["agreement"] >= (99 if art["precision"] in ("fp32", "fp16") else 80)
    # float files match torch; the normalisation is folded in (the file takes [0, 1] images)
    by = {(r["format"], r["precision"]): r for r in results}
    assert by["onnx", "fp32"]["max_abs_diff"] < 1e-4 and by["tflite", "fp32"]["max_abs_diff"] < 1e-4
    meta = onnx_format.read_metadata(out / "tiny.int8.onnx")
    assert meta["preprocessing"]["mean"] == [0.5, 0.4, 0.3] and meta["input"]["range"] == [0, 1]
    assert meta["num_classes"] == 10 and "BatchNorm" in meta["calibration"] and meta["edgekd_version"]
    assert tflite_format.read_metadata(out / "tiny.int8.tflite")["precision"] == "int8"
    assert "QuantizeLinear" in onnx_format.ops(out / "tiny.int8.onnx")
    assert "QUANTIZE" in tflite_format.ops(out / "tiny.int8.tflite")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_int8_io_and_nhwc_tflite(tiny_pt2, tmp_path):
    source = load_source(tiny_pt2)
    results = export(source, tmp_path / "o", ["tflite"], ["int8"], {"int8_io", "nhwc"}, log=lambda m: None,
                     **FAST)["artifacts"]
    path = tmp_path / "o" / "tiny.int8.tflite"
    runner = tflite_format.Runner(path)
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8
    assert list(runner.input["shape"]) == [1, 16, 16, 3]
    scale, zero = runner.input["quantization"]
    assert abs(scale - 1 / 255) < 1e-6 and zero == -128  # int8 input = pixel - 128
    assert tflite_format.read_metadata(path)["input"]["layout"] == "NHWC"
    assert results[-1]["agreement"] >= 80


def test_run_directory_generator_calibration_and_eval_data(shared, tmp_path, capfd):
    run = tmp_path / "run"
    r = _cli(capfd, "distill", "--iterations", "20", "--out", run, "--set", "generator_width=16", "--set", "batch_size=32",
             "--no-progress")
    assert r.returncode == 0, r.stderr
    r = _cli(capfd, "export", run, "--tflite", "--int8", "--calib-size", "32", "--eval-data", shared / "datasets/mnist",
             "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads((run / "export" / "export.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    assert int8["path"].endswith("student.int8.tflite") and int8["top1"] is not None
    assert int8["metadata"]["source_run"] == str(run.resolve()) and "generator" in int8["metadata"]["calibration"]
    assert int8["agreement"] >= 90  # agreement with the float student on the MNIST test set
    # litert-torch writes batch 1 and LeNet-5's flatten as a reshape to (1, 400): the files run
    # batched all the same, through a copy relabelled for any batch, with the answers of one
    # image at a time.
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    for name in ("student.fp32.tflite", "student.int8.tflite"):
        assert tflite_format.any_batch((run / "export" / name).read_bytes(), 1) is not None
        runner = tflite_format.Runner(run / "export" / name)
        batched = runner(x)
        assert runner.batched  # an interpreter for any batch, checked against one image at a time
        assert np.array_equal(batched, np.concatenate([runner(xi[None]) for xi in x]))
    # an existing output directory is refused, one line, exit 2
    r = _cli(capfd, "export", run, "--tflite", "--no-progress")
    assert r.returncode == 2 and r.stderr.startswith("error: output directory") and "--force" in r.stderr


def test_real_calibration_onnx_per_tensor(tiny_pt2, tmp_path):
    x = (np.random.default_rng(0).random((40, 3, 16, 16)) * 255).astype(np.uint8)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(40) % 10)
    source = load_source(tiny_pt2)
    results = export(source, tmp_path / "o", ["onnx"], ["int8"], {"per_tensor"}, calib=str(tmp_path / "data.npz"),
                     calib_size=20, eval_data=str(tmp_path / "data.npz"), log=lambda m: None)["artifacts"]
    assert "real images" in results[-1]["metadata"]["calibration"] and results[-1]["top1"] is not None


class NoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_model_without_batchnorm_is_calibrated_from_its_outputs(tmp_path, capfd):
    path = tmp_path / "nobn.pt2"
    save_export(NoBN().eval(), (1, 28, 28), path)
    r = _cli(capfd, "export", path, "--onnx", "--no-progress")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "nobn_export" / "export.json").read_text())
    int8 = next(a for a in meta["artifacts"] if a["precision"] == "int8")
    assert "class-balanced outputs" in int8["metadata"]["calibration"]
    assert int8["agreement"] > 90  # with the float model, on held-out synthesized inputs


class Cumulative(nn.Module):
    def forward(self, x):
        return x.logcumsumexp(1)


class Odd(nn.Module):
    """logcumsumexp converts to ONNX but has no TFLite lowering."""

    def __init__(self):
        super().__init__()
        self.conv, self.odd, self.fc = nn.Conv2d(1, 4, 3), Cumulative(), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(self.odd(self.conv(x).flatten(1)))


def test_unconvertible_op_is_named_with_its_module(tmp_path, capfd):
    path = tmp_path / "odd.pt2"
    save_export(Odd().eval(), (1, 28, 28), path)
    x = (np.random.default_rng(0).random((300, 1, 28, 28)) * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(300) % 10)
    r = _cli(capfd, "export", path, "--onnx", "--tflite", "--calib", tmp_path / "d.npz", "--calib-size", "8",
             "--no-progress")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "cannot convert to tflite" in line and "logcumsumexp" in line
    assert "Cumulative" in line and "onnx export works" in line
    assert not (tmp_path / "odd_export").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/model.pt2"], "not found"),
    (["BAD", "--fp16", "--onnx"], "fp16 is available for tflite only"),
])
def test_bad_input_one_line(tmp_path, tiny_pt2, args, message, capfd):
    args = [str(tiny_pt2) if a == "BAD" else a for a in args]
    r = _cli(capfd, "export", *args, "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_graph_captured_for_batch_one_is_refused_in_one_line(tmp_path, capfd):
    """torch.export without dynamic_shapes bakes batch 1 into the reshapes: distillation runs
    such a teacher one sample at a time, but its converted files would take batches of one only."""
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(NoBN().eval(), (torch.zeros(1, 1, 28, 28),)), str(path))
    r = _cli(capfd, "export", path, "--onnx", "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 2 and "captured for batch 1 only" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_corrupt_source(tmp_path, capfd):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    r = _cli(capfd, "export", bad, "--no-progress")
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1


def test_missing_optional_dependency_names_the_pip_command(monkeypatch):
    import importlib.util

    from edgekd.exporter.formats import FORMATS
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a))
    with pytest.raises(EdgekdError, match="pip install litert-torch"):
        FORMATS["tflite"].check_installed()
