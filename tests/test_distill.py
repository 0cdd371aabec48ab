"""edgekd distill end to end: black-box teachers in every format, the six methods, run
directories, resume after kill -9, Ctrl-C, and one-line errors for bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

from edgekd.cli import main
from edgekd.data import load_dataset
from edgekd.distillation import FLIP_AGREEMENT, Every, flip_agreement, resolve_settings
from edgekd.evaluate import top1
from edgekd.methods import METHODS
from edgekd.methods.base import Method
from edgekd.progress import describe
from edgekd.students import create_student
from edgekd.teacher import load_teacher
from unseen_teacher import make_unseen_mnist_teacher

EMBEDDED = Path(__file__).resolve().parents[1] / "edgekd" / "assets" / "mnist_lenet5.pt2"
# The method the time-to-accuracy benchmark found best on teachers with BatchNorm (docs/benchmarks.md).
AUTO_FOR_BN_TEACHERS = "condbn"
QUICK = ["--set", "batch_size=32", "--set", "student_steps=1", "--no-progress"]


# EDGEKD_TEST_DEVICE=cuda runs every new distillation here on that device (resumed runs keep
# the device they recorded).
TEST_DEVICE = os.environ.get("EDGEKD_TEST_DEVICE")


def edgekd(*args, timeout=600, **kwargs):
    if TEST_DEVICE and args[:1] == ("distill",) and "--resume" not in args:
        args = (*args, "--device", TEST_DEVICE)
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def edgekd_here(capfd, *args):
    """As edgekd(), but through the CLI's own main() in this process: torch is not imported
    again, which saves seconds per command. Output is read at the file descriptors, so a library
    that writes to fd 2 behind Python's back still breaks the one-line promise."""
    if TEST_DEVICE and args[:1] == ("distill",) and "--resume" not in args:
        args = (*args, "--device", TEST_DEVICE)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # main() sets both
    capfd.readouterr()
    try:
        with mock.patch.object(sys, "argv", ["edgekd", *map(str, args)]), warnings.catch_warnings():
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture(scope="session")
def unseen(mnist, tmp_path_factory):
    """An architecture edgekd has never seen, trained on 12k real MNIST images, in three formats."""
    folder = tmp_path_factory.mktemp("teachers")
    model, acc = make_unseen_mnist_teacher(mnist, folder / "strange.ts", limit=12000)
    assert acc > 95
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)),
                      folder / "strange.pt2")
    # The legacy exporter with training=PRESERVE keeps BatchNormalization nodes (not folded).
    torch.onnx.export(model, (example,), folder / "strange.onnx", dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}}, opset_version=17,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return {"model": model, "ts": folder / "strange.ts", "pt2": folder / "strange.pt2",
            "onnx": folder / "strange.onnx"}


@pytest.mark.parametrize("fmt", ["ts"])
def test_the_commands_of_the_design_on_a_file_named_teacher_pt(unseen, tmp_path, fmt, monkeypatch, capfd):
    """`edgekd distill teacher.pt --student mobilenet` then `edgekd export --tflite`. The other
    formats, and teachers without BatchNorm, run through every stage in test_teacher_matrix."""
    shutil.copy(unseen[fmt], tmp_path / "teacher.pt")
    monkeypatch.chdir(tmp_path)
    distilled = edgekd_here(capfd, "distill", "teacher.pt", "--student", "mobilenet", "--iterations", 2, *QUICK)
    assert distilled.returncode == 0, distilled.stderr
    text = " ".join(distilled.stdout.split())
    assert "student mobilenet -> mobilenet_v2 for 1x28x28" in text
    run = tmp_path / "runs" / "teacher-mobilenet_v2-condbn"
    assert yaml.safe_load((run / "config.yaml").read_text())["student"] == "mobilenet_v2"
    assert f"teacher teacher.pt: {'torchscript' if fmt == 'ts' else 'torch-export' if fmt == 'pt2' else 'onnx'}" in text
    if fmt == "ts":  # the export that follows takes the run just made (the same for every format)
        exported = edgekd_here(capfd, "export", "--tflite", "--no-progress")
        assert exported.returncode == 0, exported.stderr
        assert (run / "export" / "student.int8.tflite").is_file()


@pytest.mark.parametrize("fmt", ["ts", "pt2", "onnx"])
def test_black_box_teacher_matches_original_and_exposes_bn(unseen, mnist, fmt):
    teacher = load_teacher(unseen[fmt])
    assert teacher.input_shape == (1, 28, 28) and teacher.num_classes == 10
    assert len(teacher.bn_nodes) == 3 and teacher.feature_dim == 64
    x = load_dataset(mnist, "test", limit=64).x.requires_grad_()
    out = teacher.run(x, bn=True, maps=True)
    torch.testing.assert_close(out.logits, unseen["model"](x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(teacher(x), out.logits)
    assert [tuple(b.shape[:2]) for b in out.bn_inputs] == [(64, 12), (64, 24), (64, 32)]
    # The running statistics are the trained model's, so real data matches them closely.
    for b, (mean, _) in zip(out.bn_inputs, teacher.bn_stats):
        assert (b.mean((0, 2, 3)) - mean).abs().mean() < 0.5
    # One feature map per resolution stage: 28x28 (stem), 14x14 (down1), 7x7 (down2).
    assert [tuple(m.shape[2:]) for m in out.maps] == teacher.stage_sizes == [(28, 28), (14, 14), (7, 7)]
    out.logits.sum().backward()  # differentiable w.r.t. the input: what the generators need
    assert x.grad.abs().sum() > 0


def test_export_constants_move_with_the_teacher(tmp_path):
    """torch.export keeps tensor constants as plain attributes, which .to() used to leave behind
    (so a teacher moved to a GPU mixed devices); they are buffers of the loaded graph."""
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3)) * torch.tensor([2.0, 3.0, 4.0])

    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(Scaled(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},)),
                      tmp_path / "scaled.pt2")
    teacher = load_teacher(tmp_path / "scaled.pt2")
    assert any("lifted_tensor" in name for name, _ in teacher.graph.named_buffers())
    teacher.to("meta")
    assert teacher(torch.zeros(2, 1, 8, 8, device="meta")).device.type == "meta"


def test_teacher_info_json(unseen, capfd):
    result = edgekd_here(capfd, "teacher", "info", unseen["ts"], "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "torchscript" and info["input_shape"] == [1, 28, 28]
    assert info["num_classes"] == 10 and info["batchnorm_layers"] == 3
    assert set(info["methods"]) == {"condbn", "fast", "dafl", "bnstats", "ddad", "cgdd", "dafl-zo", "procedural", "proxy"}
    assert info["auto_method"] == AUTO_FOR_BN_TEACHERS and info["access"] == "gradients"
    assert info["macs"] > 100_000 and info["params"] > 10_000


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("method", ["condbn", "fast", "dafl", "bnstats", "ddad", "cgdd", "dafl-zo", "procedural",
                                    "proxy"])
def test_every_method_trains_from_pt2_and_onnx(unseen, fmt, method):
    torch.manual_seed(0)
    teacher = load_teacher(unseen[fmt])
    student = create_student("lenet5_half", 1, 10, (28, 28))
    before = [p.detach().clone() for p in student.parameters()]
    settings = resolve_settings(method, {}, {"batch_size": 16, "num_generators": 1})
    m = METHODS.get(method)(teacher, student, settings, "cpu")
    for i in range(3):
        synth = m.generator_step(i, student_training=True)
        assert synth.x.shape == (16, 1, 28, 28)
        losses = {**synth.losses, **m.student_step(synth.x, teacher.run(synth.x, maps=True), synth.labels)}
        assert all(torch.isfinite(v) for v in losses.values()), losses
    assert any((a - b).abs().sum() > 0 for a, b in zip(before, student.parameters()))


@pytest.mark.parametrize("method", ["condbn", "fast", "bnstats", "ddad", "dafl", "cgdd", "dafl-zo", "proxy"])
def test_generator_step_descends_its_own_objective(method):
    """One generator update, then the same noise again: the method's generator objective must
    be lower. A sign flip in the update raises it; a step that moves nothing leaves it equal."""
    torch.manual_seed(0)  # the same models whatever ran before
    teacher = load_teacher(EMBEDDED)
    student = create_student("lenet5_half", 1, 10, (28, 28))
    overrides = {"batch_size": 32, "lr_generator": 1e-4, "num_generators": 1}
    if method == "fast":
        overrides["inner_steps"] = 1  # the round's loss is then the meta generator's own
    m = METHODS.get(method)(teacher, student, resolve_settings(method, {}, overrides), "cpu")
    before_weights = [p.detach().clone() for p in m.generators.parameters()]

    def objective():
        torch.manual_seed(0)
        return m.generator_step(0, student_training=True).losses["generator"].item()

    before, after = objective(), objective()
    assert any((a - b).abs().sum() > 0 for a, b in zip(before_weights, m.generators.parameters()))
    assert after < before, (before, after)


def test_distill_torchscript_end_to_end(unseen, mnist, tmp_path, capfd):
    out = tmp_path / "run"
    result = edgekd_here(capfd, "distill", unseen["ts"], "--method", "auto", "--iterations", 120, "--eval-every", 40,
                    "--checkpoint-every", 40, "--eval-data", mnist, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    for name in ("student.pt2", "student.pt", "generator.pt", "config.yaml", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == AUTO_FOR_BN_TEACHERS and summary["iterations"] == 120
    assert summary["teacher_top1"] > 95
    assert summary["student_top1"] > 40, summary  # chance is 10 %: the student learnt digits
    assert 0 <= summary["fidelity"] <= 100 and summary["wall_seconds"] > 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["teacher"]["sha256"] and config["settings"]["batch_size"] == 64  # condbn's own
    # Mirrored digits change class: augment_flip=auto measures it on the eval data and says so.
    assert config["settings"]["augment_flip"] == "auto" and summary["augment_flip"] is False
    assert "so flips are off" in " ".join(result.stdout.split())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [40, 80, 120]
    assert all({"seconds", "losses", "fidelity", "student_top1"} <= set(m) for m in metrics)
    # The archive loads with plain torch.export and is the saved student.
    program = torch.export.load(str(out / "student.pt2")).module()
    weights = torch.load(out / "student.pt", weights_only=True)
    student = create_student(weights["name"], 1, 10, (28, 28))
    student.load_state_dict(weights["state_dict"])
    x = load_dataset(mnist, "test", limit=300).x
    torch.testing.assert_close(program(x), student.eval()(x))
    acc = top1(program, load_dataset(mnist, "test"), lambda v: v)
    assert abs(acc - summary["student_top1"]) < 0.01
    # `edgekd eval` reports the same figure for the student file.
    result = edgekd_here(capfd, "eval", out / "student.pt2", "--data", mnist, "--json")
    assert json.loads(result.stdout)["top1"] == pytest.approx(acc, abs=0.01)
    # benchmarks/quality_estimates.py on this finished run: its truth is the run's own fidelity
    # (both on the full eval data), every candidate an agreement in [0, 100].
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_estimates.py"
    estimates = tmp_path / "quality_estimates.json"
    done = subprocess.run([sys.executable, script, out, "--out", estimates], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row, = json.loads(estimates.read_text())["rows"]
    assert row["truth"] == pytest.approx(summary["fidelity"], abs=0.01)
    assert row["student_top1"] == pytest.approx(acc, abs=0.01) and row["method"] == AUTO_FOR_BN_TEACHERS
    assert all(0 <= row[c] <= 100 for c in ("generator", "procedural"))
    # Without eval data there is nothing to compare with: one line, non-zero exit.
    blind = tmp_path / "blind"
    blind.mkdir()
    (blind / "config.yaml").write_text(yaml.safe_dump({**config, "eval_data": None}))
    done = subprocess.run([sys.executable, script, blind], capture_output=True, text=True)
    assert done.returncode != 0 and "no --eval-data" in done.stderr and "Traceback" not in done.stderr


def test_progress_line_says_which_iteration_its_figures_are_from():
    """Evaluations come every 100 iterations or 2 minutes: a figure shown between them is the
    last one, and says so."""
    last_eval = {"iteration": 200, "student_top1": 9.9, "fidelity": 10.4}
    line = describe(1753, 1080.0, {"kd": 2.27}, 314.0, last_eval)
    assert "top-1 9.9%  agrees with teacher 10.4% (at it 200)" in line
    assert "top-1" not in describe(1753, 1080.0, {"kd": 2.27}, 314.0, {})
    due = Every(100, 2.0, seconds=0.0)
    assert not due(7, 119.0) and due(8, 121.0) and not due(9, 125.0) and due(100, 130.0)


def test_fast_trains_resumes_and_improves_on_mnist(mnist, tmp_path, capfd):
    out = tmp_path / "run"
    # Digits change class when mirrored: flips off, as docs/distill.md tells users of such teachers.
    settings = ["--set", "synthesis_only=0", "--set", "inner_steps=5", "--set", "student_steps=5",
                "--set", "augment_flip=false"]
    # Killed once it has checkpointed iteration 20 of 60, then resumed to the end. (Resuming a
    # finished 20-iteration run with --iterations 60 instead restarts the annealed learning rate;
    # at one thread that run fell to 9 % and stayed there, an uninterrupted one reached 75 %.)
    args = ["distill", "--method", "fast", "--iterations", 60, "--eval-every", 10, "--checkpoint-every", 10,
            "--eval-data", mnist, "--out", out, *settings, "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint, deadline = out / "checkpoint.pt", time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            checkpoint.exists() and torch.load(checkpoint, weights_only=True)["iteration"] >= 20):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    state = torch.load(checkpoint, weights_only=True)
    assert 20 <= state["iteration"] < 60, stderr.decode()[-2000:]
    assert len(state["ranks"][0]["method"]["bn_memory"]) == 2  # one per BatchNorm
    second = edgekd_here(capfd, "distill", "--resume", out, "--no-progress")
    assert second.returncode == 0, second.stderr
    assert f"at iteration {state['iteration']}" in " ".join(second.stdout.split())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [10, 20, 30, 40, 50, 60]
    top1 = [m["student_top1"] for m in metrics]
    # Chance is 10 %; a generator or student that does not learn stays there.
    assert max(top1) > 30 and top1[-1] > top1[0] + 10, top1
    assert {"bn", "onehot", "adv", "kd"} <= set(metrics[-1]["losses"])


def test_resume_after_kill_9_loses_at_most_one_checkpoint_interval(tmp_path):
    out = tmp_path / "run"
    args = ["distill", "--iterations", 400, "--checkpoint-every", 10, "--eval-every", 1000, "--out", out, *QUICK]
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 10 <= saved < 400 and saved % 10 == 0
    result = edgekd("--help")  # nothing left locked; now continue the run
    result = edgekd("distill", "--resume", out, "--iterations", saved + 20, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"resumed {out} at iteration {saved}" in " ".join(result.stdout.split())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == saved + 20


@pytest.mark.parametrize("method", ["condbn", "procedural"])  # procedural: its population too
def test_resumed_run_reproduces_an_uninterrupted_one_bit_for_bit(tmp_path, monkeypatch, method):
    """Model, optimizers, pool and random state all come back: a run stopped by SIGINT after
    iteration 4 and resumed to 6 ends with exactly the weights of a run that never stopped."""
    import edgekd.distillation as run
    from edgekd.errors import EdgekdError

    teacher = load_teacher(EMBEDDED)
    settings = resolve_settings(method, {}, {"batch_size": 16, "student_batch_size": 16, "student_steps": 2})

    def train(out, resume=False):
        config = run.new_config(teacher, student="lenet5_half", method=method, settings=dict(settings),
                                budget=run.Budget(6, None), eval_data=None, mean=None, std=None, device="cpu",
                                seed=3, checkpoint_every=(2, None), eval_every=(100, None), recipe=None,
                                teacher_arch=None)
        run.distill(teacher, config, out, resume=resume, show_progress=False, log=lambda *a: None)

    train(tmp_path / "straight")
    update = run.Progress.update

    def interrupt_after_third(self, iteration, *args):
        update(self, iteration, *args)
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the loop finishes iteration 4, then checkpoints

    monkeypatch.setattr(run.Progress, "update", interrupt_after_third)
    with pytest.raises(EdgekdError, match="interrupted at iteration 4; checkpoint saved"):
        train(tmp_path / "stopped")
    monkeypatch.setattr(run.Progress, "update", update)
    at_stop = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert at_stop["iteration"] == 4
    train(tmp_path / "stopped", resume=True)

    def weights(out):
        return torch.load(out / "student.pt", weights_only=True)["state_dict"]

    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "stopped")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    generators = [torch.load(out / "generator.pt", weights_only=True)["state_dicts"][0]
                  for out in (tmp_path / "straight", tmp_path / "stopped")]
    assert all(torch.equal(generators[0][k], generators[1][k]) for k in generators[0])
    # The two iterations after the resume did change the weights (an equality that cannot fail
    # would also hold if the resumed run trained nothing).
    assert not all(torch.equal(at_stop["ranks"][0]["student"][k], resumed[k]) for k in resumed)


def processes_running(fragment: str) -> list[int]:
    """Pids of live processes whose command line contains `fragment` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and fragment in command and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_two_processes_under_torchrun_train_checkpoint_and_resume_after_kill_9(tmp_path, mnist):
    """`--nproc 2` (torchrun, gloo on the CPU): one student kept identical on both ranks by DDP,
    a generator and pool share per rank, one checkpoint holding both, kill -9 then --resume."""
    out = tmp_path / "run"
    args = ["distill", "--nproc", 2, "--iterations", 400, "--checkpoint-every", 4, "--eval-every", 1000,
            "--out", out, *QUICK]
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.5)
    time.sleep(3)
    # The launcher and both training processes (torchrun starts them in sessions of their own).
    for pid in processes_running(f"--out {out}"):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    assert not processes_running(f"--out {out}")
    state = torch.load(checkpoint, weights_only=True)
    saved = state["iteration"]
    assert state["world_size"] == 2 and len(state["ranks"]) == 2 and saved % 4 == 0 and saved < 400
    first, second = (r for r in state["ranks"])
    assert all(torch.equal(first["student"][k], second["student"][k]) for k in first["student"])
    assert not all(torch.equal(first["method"]["generators"][k], second["method"]["generators"][k])
                   for k in first["method"]["generators"])
    assert len(torch.load(out / "pool.pt", weights_only=True)["ranks"]) == 2

    assert_one_line_error(edgekd("distill", "--resume", out, "--no-progress"), "checkpointed by 2 process(es)")
    result = edgekd("distill", "--resume", out, "--nproc", 2, "--iterations", saved + 8, "--eval-data", mnist,
                    "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"resumed {out} at iteration {saved}" in " ".join(result.stdout.split())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == saved + 8 and summary["processes"] == 2
    assert "Traceback" not in result.stderr


def test_bf16_autocast_trains_on_the_cpu(tmp_path, capfd, monkeypatch):
    """bf16 runs the teacher's and generators' passes; the student learns in float32 (under bf16
    a LeNet-5 student collapsed to one answer: 11.7 % on MNIST after 120 iterations against
    87 % with float32 steps, on CUDA and on the CPU alike)."""
    steps, syntheses = [], []
    student_step, method = Method.student_step, METHODS.get(AUTO_FOR_BN_TEACHERS)
    generator_step = method.generator_step

    def spy_student(self, x, teacher_out, labels):
        steps.append((torch.is_autocast_enabled(x.device.type), x.dtype, teacher_out.logits.dtype))
        return student_step(self, x, teacher_out, labels)

    def spy_synthesis(self, iteration, student_training):
        syntheses.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return generator_step(self, iteration, student_training)

    monkeypatch.setattr(Method, "student_step", spy_student)
    monkeypatch.setattr(method, "generator_step", spy_synthesis)
    out = tmp_path / "run"
    result = edgekd_here(capfd, "distill", "--iterations", 3, "--precision", "bf16", "--device", "cpu", "--out", out,
                         "--set", "synthesis_only=0", "--set", "synthesis_until=1", *QUICK)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["iterations"] == 3 and summary["device"] == "cpu"
    assert len(steps) == 3 and set(steps) == {(False, torch.float32, torch.float32)}
    assert syntheses == [True] * 3


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "distill", "--iterations", "100000",
                             "--out", str(out), *QUICK], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "config.yaml").exists():
        time.sleep(0.5)
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "interrupted at iteration" in err and "Traceback" not in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] > 0


def test_exploding_losses_roll_back_then_stop_with_a_clear_error(tmp_path, capfd):
    out = tmp_path / "run"
    result = edgekd_here(capfd, "distill", "--iterations", 200, "--checkpoint-every", 5, "--out", out,
                    "--set", "lr_student=1e30", *QUICK)
    assert_one_line_error(result, "NaN")
    assert "rolled back" in result.stdout


def test_pretrained_cifar_resnet56_state_dict_is_a_teacher(shared):
    path = shared / "teachers" / "cifar10-resnet-akamaster" / "resnet56-4bfd9763.th"
    teacher = load_teacher(path, arch="resnet56")
    assert teacher.input_shape == (3, 32, 32) and len(teacher.bn_nodes) == 55
    data = load_dataset(shared / "datasets" / "cifar10", "test", limit=500)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert top1(teacher, data, lambda x: (x - mean) / std) > 90  # published 93.39 on all 10k


def test_flip_agreement_tells_mirror_symmetric_classes_from_digits(shared):
    """augment_flip=auto's evidence: a CIFAR-10 teacher keeps its class on mirrored photos, an
    MNIST teacher does not on mirrored digits."""
    cifar = load_teacher(shared / "teachers" / "cifar10-resnet-akamaster" / "resnet56-4bfd9763.th", arch="resnet56")
    photos = load_dataset(shared / "datasets" / "cifar10", "test", limit=512).x
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert flip_agreement(cifar, (photos - mean) / std) >= FLIP_AGREEMENT
    digits = load_dataset(shared / "datasets" / "mnist", "test", limit=512).x
    assert flip_agreement(load_teacher(EMBEDDED), digits) < FLIP_AGREEMENT


def _bad_inputs(tmp_path, unseen, mnist):
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(EMBEDDED.read_bytes()[:5000])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(2000))
    pickled = tmp_path / "module.pt"
    torch.save(unseen["model"], pickled)
    tuple_out = tmp_path / "tuple.ts"
    torch.jit.save(torch.jit.trace(TwoOutputs(), torch.zeros(1, 1, 28, 28)), str(tuple_out))
    no_bn = tmp_path / "lenet5.ts"
    torch.jit.save(torch.jit.trace(create_student("lenet5", 1, 10, (28, 28)).eval(), torch.zeros(1, 1, 28, 28)),
                   str(no_bn))
    broken_tflite = tmp_path / "broken.tflite"
    broken_tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + os.urandom(500))
    return [
        (["distill", tmp_path / "missing.pt2"], "not found"),
        (["distill", broken_tflite], "cannot load TFLite flatbuffer"),
        (["distill", "nosuchmodule:predict", "--input-shape", "1,28,28"], "cannot import the teacher callable"),
        (["distill", unseen["pt2"], "--teacher-backend", "runtime"], "--teacher-backend runtime runs ONNX"),
        (["distill", unseen["onnx"], "--teacher-backend", "runtime", "--method", "dafl"],
         "gradients (a differentiable graph answering more than labels)"),
        (["distill", truncated], "truncated"),
        (["distill", garbage], "not a valid ONNX"),
        (["distill", pickled], "--trust-pickle"),
        (["distill", "--student", "nosuchnet"], "unknown student"),
        (["distill", "--method", "nosuchmethod"], "unknown method"),
        (["distill", no_bn, "--method", "bnstats"], "BatchNorm"),
        (["distill", unseen["ts"], "--input-shape", "3,32,32"], "rejected every input shape"),
        (["distill", tuple_out], "returns 2 values"),
        (["distill", "--eval-data", tmp_path], "cannot read eval data"),
        (["distill", "--eval-data", mnist / ".." / "cifar10"], "shape"),
        (["distill", "--set", "nosuchsetting=1"], "unknown setting"),
        (["distill", "--set", "augment_flip=maybe"], "choose one of true, false, auto"),
        (["distill", "--resume", tmp_path], "not an edgekd run directory"),
        (["distill", "--device", "tpu"], "--device takes auto, cpu, cuda or cuda:N"),
        (["distill", "--device", "cuda:99"], "cuda:99"),  # no GPU, or fewer than 100
        (["distill", "--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA GPU"),
        (["distill", "--method", "fast", "--max-queries", 10, "--nproc", 2], "--max-queries counts"),
    ]


class TwoOutputs(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3)).unsqueeze(1).repeat(1, 10), x


def test_bad_input_gives_one_line_and_no_run_directory(tmp_path, unseen, mnist, capfd):
    for args, fragment in _bad_inputs(tmp_path, unseen, mnist):
        out = tmp_path / "never"
        result = edgekd_here(capfd, *args, "--out", out, "--iterations", 1)
        assert_one_line_error(result, fragment)
        assert not out.exists(), args
