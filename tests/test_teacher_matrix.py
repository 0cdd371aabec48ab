"""Every kind of teacher a user can hand in, end to end: {an MNIST CNN with BatchNorm, the
advertorch MNIST CNN without, the CIFAR-10 ResNet-20 of ../shared} x {TorchScript, torch.export
.pt2, ONNX as torch.onnx.export writes it by default, .tflite float and int8, a Python callable}
x {with and without --eval-data}. Each cell distils a few iterations, exports the run with
`export --onnx --tflite --int8`, and probes the int8 TFLite file on this host; one cell per
format is killed with kill -9 and resumed. The point is that every cell runs and every artifact
loads and answers as its float model does; accuracy is asserted in test_export_accuracy."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekd.cli import cli
from edgekd.data import load_dataset
from edgekd.exporter import onnx_format, tflite_format
from shared_teachers import advertorch_lenet5, cifar_resnet
from unseen_teacher import make_unseen_mnist_teacher

TEACHERS = ("mnist-bn", "mnist-nobn", "cifar-resnet20")
FORMATS = ("torchscript", "pt2", "onnx", "tflite", "tflite-int8", "callable")
EVAL_IMAGES = 500  # real test images per dataset for --eval-data (scores of the student, the teacher, the files)
# A few cheap iterations: the cells test that every path runs, not how well.
QUICK = ["--student", "lenet5_half", "--iterations", "2", "--set", "batch_size=16", "--set", "student_batch_size=16",
         "--set", "student_steps=1", "--no-progress"]
# One cell per format is killed and resumed (without eval data: the path that crashed on a
# TorchScript teacher without BatchNorm), the three teachers in turn.
KILLED = {"torchscript": "mnist-nobn", "pt2": "mnist-bn", "onnx": "mnist-nobn", "tflite": "cifar-resnet20",
          "tflite-int8": "mnist-bn", "callable": "cifar-resnet20"}
# Teacher top-1 (%) on the EVAL_IMAGES, loaded by edgekd, whatever the format (int8 loses a little).
TEACHER_TOP1 = {"mnist-bn": 93, "mnist-nobn": 97, "cifar-resnet20": 88}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("matrix")


@pytest.fixture(scope="module")
def modules(shared, mnist):
    """The three teachers as torch modules taking images in [0, 1]: (module, input shape, dataset)."""
    strange, acc = make_unseen_mnist_teacher(mnist, os.devnull, limit=12000)
    assert acc > 95
    return {"mnist-bn": (strange.eval(), (1, 28, 28), mnist),
            "mnist-nobn": (advertorch_lenet5(shared), (1, 28, 28), mnist),
            "cifar-resnet20": (cifar_resnet(shared, 20, normalised=True), (3, 32, 32), shared / "datasets/cifar10")}


@pytest.fixture(scope="module")
def eval_data(modules, folder):
    """EVAL_IMAGES real test images of each dataset, as an .npz a user could pass."""
    paths = {}
    for name, (_, _, dataset) in modules.items():
        ds = load_dataset(dataset, "test", limit=EVAL_IMAGES)
        paths[name] = folder / f"{name}-test.npz"
        np.savez(paths[name], x=ds.x.numpy(), y=ds.y.numpy())
    return paths


def write_teacher(model, shape, fmt: str, path: Path, calibration: np.ndarray) -> str:
    """`model` saved as a user would save it in `fmt`, each with its tool's defaults (batch 1);
    returns what edgekd is given: the file, or package.module:function for a callable."""
    example = (torch.zeros(1, *shape),)
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, example), str(path))
    elif fmt == "pt2":
        torch.export.save(torch.export.export(model, example), str(path))
    elif fmt == "onnx":
        torch.onnx.export(model, example, str(path))
    elif fmt == "tflite":
        import litert_torch

        litert_torch.convert(model, example).export(str(path))
    elif fmt == "tflite-int8":  # full-integer, calibrated on real images
        float_path = path.with_suffix(".float.tflite")
        write_teacher(model, shape, "tflite", float_path, calibration)
        tflite_format.quantize(float_path, "int8", calibration, path, {}, set())
    elif fmt == "callable":  # a module of the user's that runs the model in plain torch
        scripted = path.with_suffix(".ts")
        write_teacher(model, shape, "torchscript", scripted, calibration)
        path.with_suffix(".py").write_text(textwrap.dedent(f"""\
            import torch
            _model = torch.jit.load({str(scripted)!r})

            def predict(x):
                with torch.no_grad():
                    return _model(torch.from_numpy(x)).numpy()

            predict.input_shape = {tuple(shape)}
            """))
        return f"{path.stem}:predict"
    return str(path)


@pytest.fixture(scope="module")
def teacher_files(modules, folder):
    """(teacher, format) -> what edgekd is given, written on first use."""
    cache = {}

    def get(name, fmt):
        if (name, fmt) not in cache:
            model, shape, dataset = modules[name]
            calibration = load_dataset(dataset, "train" if shape[0] == 1 else "test", limit=64).x.numpy()
            suffix = {"torchscript": ".pt", "pt2": ".pt2", "onnx": ".onnx", "tflite": ".tflite",
                      "tflite-int8": ".tflite", "callable": ".py"}[fmt]
            cache[name, fmt] = write_teacher(model, shape, fmt, folder / f"{name.replace('-', '_')}_{fmt.replace('-', '_')}{suffix}",
                                             calibration)
        return cache[name, fmt]

    return get


def edgekd(*args):
    """An edgekd command in this process (its output captured), failing the test with the output
    when it fails."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exit_code != 0:
        raise AssertionError(f"edgekd {' '.join(map(str, args))} exited {result.exit_code}: {result.exception!r}\n"
                             f"{result.output[-3000:]}")
    return " ".join(result.output.split())


def kill_9_and_resume(teacher: str, out: Path, cwd: Path) -> str:
    """Starts a long distillation in its own process, kills it with SIGKILL once it has written a
    checkpoint, and resumes it in this process to two iterations past the checkpoint."""
    args = [teacher, *QUICK, "--iterations", "1000", "--checkpoint-every", "1", "--eval-every", "1000", "--out", out]
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "distill", *map(str, args)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint, deadline = out / "checkpoint.pt", time.time() + 300
    while time.time() < deadline and not checkpoint.exists() and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert checkpoint.exists(), f"no checkpoint before the kill: {stderr.decode()[-2000:]}"
    saved = torch.load(checkpoint, weights_only=True)["iteration"]
    text = edgekd("distill", "--resume", out, "--iterations", saved + 2, "--no-progress")
    assert f"resumed {out} at iteration {saved}" in text
    assert json.loads((out / "summary.json").read_text())["iterations"] == saved + 2
    return text


@pytest.mark.parametrize("with_eval", [False, True], ids=["no-eval-data", "eval-data"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", TEACHERS)
def test_every_teacher_distils_exports_and_probes(name, fmt, with_eval, teacher_files, eval_data, folder, tmp_path,
                                                  monkeypatch):
    teacher = teacher_files(name, fmt)
    monkeypatch.chdir(folder)  # where a callable teacher's module is found, as from a user's shell
    run = tmp_path / "run"
    data = ["--eval-data", eval_data[name]] if with_eval else []
    if not with_eval and KILLED[fmt] == name:
        kill_9_and_resume(teacher, run, folder)
    else:
        edgekd("distill", teacher, *QUICK, "--out", run, *data)
    summary = json.loads((run / "summary.json").read_text())
    if with_eval:
        assert summary["teacher_top1"] >= TEACHER_TOP1[name], summary
        assert summary["student_top1"] is not None and summary["fidelity"] is not None
    else:  # no quality figure without data: none is known to track real top-1
        assert summary["quality"].startswith("not estimated without data") and "fidelity" not in summary, summary
        assert 0 <= summary["probe_agreement"] <= 100

    exported = edgekd("export", run, "--onnx", "--tflite", "--int8", *data, "--no-progress")
    assert "exported to" in exported
    artifacts = {(a["format"], a["precision"]): a for a in json.loads((run / "export/export.json").read_text())["artifacts"]}
    assert set(artifacts) == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")}
    # Every file loads in its own runtime and the float files answer as the student does.
    x = np.random.default_rng(0).random((6, *summary_shape(run)), dtype=np.float32)
    student = torch.export.load(str(run / "student.pt2")).module()
    with torch.no_grad():
        expected = student(torch.from_numpy(x)).numpy()
    for (fmt_name, precision), artifact in artifacts.items():
        runner = (onnx_format if fmt_name == "onnx" else tflite_format).Runner(artifact["path"])
        answers = runner(x)
        assert answers.shape == expected.shape and np.isfinite(answers).all()
        if precision == "fp32":
            assert np.abs(answers - expected).max() < 1e-3, (fmt_name, artifact)
            assert artifact["max_abs_diff"] < 1e-3, artifact
        if with_eval:
            assert artifact["top1"] is not None

    probe = json.loads(edgekd_json("probe", artifacts["tflite", "int8"]["path"], "--device", "host", "--json",
                                   "--no-save", "--runs", "5", "--warmup", "1", *(["--eval-data", eval_data[name]] if with_eval else [])))
    assert probe["latency_ms"]["p50"] > 0
    if with_eval:  # the probe scores the file as the export did
        assert probe["top1"] == pytest.approx(artifacts["tflite", "int8"]["top1"], abs=0.01), probe


def summary_shape(run: Path):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["teacher"]["input_shape"]


def edgekd_json(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.exception, result.output[-3000:])
    return result.output
