"""Every export format and precision side by side, for an MNIST student, the CIFAR-10 ResNet-20
(BatchNorm) and the advertorch MNIST LeNet-5 (no BatchNorm: calibration inputs are optimised
from its outputs alone), calibrated without data (synthetic) and, as the reference, on real images.

    python benchmarks/export_formats.py [--mnist-run RUN] [--resnet20 FILE] [--quick]

RUN is a run directory from `edgekd distill` on the embedded MNIST teacher (made here when not
given). Prints one table and writes benchmarks/results/export_formats.json. Data come from
$EDGEKD_DATA (default ../shared). Accuracy is on the full test sets (--quick: 1000 samples).
"""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgekd.data import load_dataset
from edgekd.exporter.core import export
from edgekd.exporter.formats import FORMATS, PRECISIONS
from edgekd.exporter.source import load_source
from edgekd.fileio import write_json
from edgekd.teacher import save_export

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "tests"))
from shared_teachers import CIFAR_MEAN, CIFAR_STD, advertorch_lenet5  # noqa: E402


def mnist_run(work: Path) -> Path:
    run = work / "mnist-run"
    subprocess.run([sys.executable, "-m", "edgekd.cli", "distill", "--iterations", "1500", "--out", str(run),
                    "--set", "generator_width=32", "--set", "batch_size=64", "--no-progress"], check=True)
    return run


def nobn_lenet5(work: Path) -> Path:
    save_export(advertorch_lenet5(DATA), (1, 28, 28), work / "lenet5_advertorch.pt2")
    return work / "lenet5_advertorch.pt2"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist-run", type=Path)
    ap.add_argument("--resnet20", type=Path, default=DATA / "teachers/cifar10-resnet-akamaster/resnet20-12fca82f.th")
    ap.add_argument("--quick", action="store_true", help="1000 test samples instead of all")
    args = ap.parse_args()
    console = Console(width=160)
    work = Path(tempfile.mkdtemp(prefix="edgekd-export-bench-"))
    limit = 1000 if args.quick else None
    cases = [
        ("MNIST student", lambda: load_source(args.mnist_run or mnist_run(work)), DATA / "datasets/mnist"),
        ("CIFAR-10 ResNet-20", lambda: load_source(args.resnet20, "resnet20", (3, 32, 32), CIFAR_MEAN, CIFAR_STD),
         DATA / "datasets/cifar10"),
        ("MNIST LeNet-5 without BatchNorm", lambda: load_source(nobn_lenet5(work)), DATA / "datasets/mnist"),
    ]
    rows = []
    for model_name, load, data in cases:
        source = load()
        eval_npz = work / f"{source.name}-eval.npz"
        ds = load_dataset(data, "test", limit)
        np.savez(eval_npz, x=(ds.x.numpy() * 255).round().astype(np.uint8), y=ds.y.numpy())
        for calib in ("synthetic", str(data)):
            results = export(source, work / f"{source.name}-{len(rows)}", list(FORMATS), list(PRECISIONS),
                             set(), calib, 256, str(eval_npz), log=console.print)["artifacts"]
            for r in results:
                fp32 = next(x for x in results if x["format"] == r["format"] and x["precision"] == "fp32")
                rows.append({"model": model_name, "calibration": "synthetic" if calib == "synthetic" else "real images",
                             "format": r["format"], "precision": r["precision"], "size_bytes": r["size_bytes"],
                             "size_vs_fp32": round(r["size_bytes"] / fp32["size_bytes"], 3),
                             "top1": r["top1"], "top1_drop": round(fp32["top1"] - r["top1"], 2),
                             "agreement": r["agreement"], "latency_ms": r["latency_ms"]})
    table = Table(title=f"edgekd export, {datetime.date.today()} ({'1000' if args.quick else 'all'} test samples)")
    for col in ("model", "calibration", "format", "precision", "KB", "x fp32", "top-1 %", "drop", "agree %", "ms"):
        table.add_column(col, justify="left" if col in ("model", "calibration", "format", "precision") else "right")
    for r in rows:
        table.add_row(r["model"], r["calibration"], r["format"], r["precision"], f"{r['size_bytes'] / 1024:.1f}",
                      f"{r['size_vs_fp32']:.2f}", f"{r['top1']:.2f}", f"{r['top1_drop']:+.2f}",
                      f"{r['agreement']:.2f}", f"{r['latency_ms']:.2f}")
    console.print(table)
    out = ROOT / "benchmarks/results/export_formats.json"
    write_json(out, {"date": str(datetime.date.today()), "command": " ".join(["python", *sys.argv]),
                     "test_samples": limit or "all", "rows": rows})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
