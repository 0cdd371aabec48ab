"""Large inputs: what each stage costs on a teacher at the resolution most users have, 224 x 224
colour images and 1,000 classes, on this machine's CPU.

    python benchmarks/large_inputs.py [--iterations 10] [--teacher mobilenet_v2|resnet18]
                                      [--batch 16] [--student-batch 32]

The teacher is torchvision's architecture with random weights (no pretrained weights are
reachable here) whose BatchNorm statistics are recalibrated on CIFAR-10 test images upsampled to
224 px (../shared, or $EDGEKD_DATA), written as a .pt2 with ImageNet's normalisation. Its
accuracy means nothing; what it costs does. Each stage is the user's command in a process of
its own, so that its peak resident memory (ru_maxrss) is its own:

  distill   edgekd distill teacher.pt2 --student mobilenet --iterations N (auto's method and
            defaults but for the batches; no eval data, so the probe set is inverted from the
            teacher first). The batches are --set to --batch (synthesis) and --student-batch:
            the defaults, 64 and 128, are sized for 32 x 32 images, and 64 images of 224 x 224
            through a MobileNetV2's backward take over 9 GB
  export    edgekd export RUN --onnx --tflite --int8 (calibrated from the run's generator)
  probe     edgekd probe RUN/export/<student>.int8.tflite --device host

Images per second of distillation's two phases come from its metrics (an evaluation after every
iteration, not counted in the training time): generator updates (synthesis alone, before
synthesis_only) and student rounds (samples from the frozen generator + student steps).
Writes benchmarks/results/large_inputs.json.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
import yaml
from rich.console import Console
from rich.table import Table

from edgekd.data import load_dataset
from edgekd.fileio import write_json
from edgekd.teacher import save_export

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "tests"))
from shared_teachers import Normalised  # noqa: E402
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE = 224


@torch.no_grad()
def make_teacher(name: str, path: Path, images: int = 512) -> None:
    """torchvision `name` (1,000 classes, random weights), its BatchNorm statistics averaged over
    `images` upsampled CIFAR-10 test images (momentum None: a plain mean), saved as a .pt2 that
    takes images in [0, 1]."""
    torch.manual_seed(0)
    net = Normalised(getattr(torchvision.models, name)(num_classes=1000), IMAGENET_MEAN, IMAGENET_STD)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    cifar = load_dataset(DATA / "datasets/cifar10", "test").x[:images]
    for batch in cifar.split(64):
        net(F.interpolate(batch, size=SIZE, mode="bilinear", align_corners=False))
    save_export(net.eval(), (3, SIZE, SIZE), path, {"mean": [0.0] * 3, "std": [1.0] * 3})


def stage(name: str, args: list[str]) -> dict:
    """One edgekd command in its own process: wall seconds and peak resident memory."""
    print("$ edgekd", " ".join(args), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{name} failed:\n{output}")
    return {"stage": name, "command": "edgekd " + " ".join(args), "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}  # ru_maxrss is in KiB on Linux


def phase_rates(run: Path) -> dict:
    """Images per second of the generator-only iterations and of the student rounds, from the
    training clock of consecutive evaluations."""
    settings = yaml.safe_load((run / "config.yaml").read_text())["settings"]
    points = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    iterations = summary["iterations"]
    first_student = next(i for i in range(1, iterations + 1) if (i - 1) / iterations >= settings["synthesis_only"])
    rates, previous = {"generator": [0, 0.0], "student": [0, 0.0]}, {"iteration": 0, "seconds": 0.0}
    for p in points:
        for i in range(previous["iteration"] + 1, p["iteration"] + 1):
            share = (p["seconds"] - previous["seconds"]) / (p["iteration"] - previous["iteration"])
            if i < first_student:
                rates["generator"][0] += settings["batch_size"]
                rates["generator"][1] += share
            else:
                rates["student"][0] += settings["batch_size"] + settings["student_steps"] * settings["student_batch_size"]
                rates["student"][1] += share
        previous = p
    return {"method": summary["method"], "pool_size": summary.get("pool_size"),
            "generator_images_per_s": round(rates["generator"][0] / rates["generator"][1], 1) if rates["generator"][1] else None,
            "student_round_images_per_s": round(rates["student"][0] / rates["student"][1], 1) if rates["student"][1] else None,
            "settings": {k: settings[k] for k in ("batch_size", "student_steps", "student_batch_size", "pool_size",
                                                  "pool_memory_mb", "synthesis_only", "synthesis_until")}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--teacher", default="mobilenet_v2", choices=["mobilenet_v2", "resnet18"])
    ap.add_argument("--batch", type=int, default=16, help="synthesis batch (--set batch_size)")
    ap.add_argument("--student-batch", type=int, default=32, help="student batch (--set student_batch_size)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/large_inputs.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-large-"))
    teacher, run = work / f"{args.teacher}_224.pt2", work / "run"
    make_teacher(args.teacher, teacher)
    stages = [stage("distill", ["distill", str(teacher), "--student", "mobilenet", "--iterations", str(args.iterations),
                                "--eval-every", "1", "--set", f"batch_size={args.batch}",
                                "--set", f"student_batch_size={args.student_batch}", "--out", str(run),
                                "--no-progress"])]
    stages[0].update(phase_rates(run))
    student = json.loads((run / "summary.json").read_text())["student"]
    stages.append(stage("export", ["export", str(run), "--onnx", "--tflite", "--int8"]))
    int8 = next((run / "export").glob("*.int8.tflite"))
    stages.append(stage("probe", ["probe", str(int8), "--device", "host"]))
    table = Table(title=f"{args.teacher} 3x{SIZE}x{SIZE}, 1,000 classes -> {student}, "
                        f"{torch.get_num_threads()} threads, {args.iterations} iterations")
    for column in ("stage", "seconds", "peak RSS (MB)", "images/s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    d = stages[0]
    table.add_row("distill", f"{d['seconds']:.0f}", f"{d['peak_rss_mb']:,}",
                  f"generator {d['generator_images_per_s']}, student rounds {d['student_round_images_per_s']}")
    for s in stages[1:]:
        table.add_row(s["stage"], f"{s['seconds']:.0f}", f"{s['peak_rss_mb']:,}", "")
    Console(width=140).print(table)
    write_json(args.out, {"date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
                          "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                          "threads": torch.get_num_threads(), "teacher": f"torchvision {args.teacher}, random weights, "
                          "BatchNorm recalibrated on upsampled CIFAR-10", "input": [3, SIZE, SIZE], "classes": 1000,
                          "student": student, "stages": stages})


if __name__ == "__main__":
    main()
