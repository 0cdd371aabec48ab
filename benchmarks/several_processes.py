"""Several processes on the CPU: the same distillation as one process and as `--nproc N` gloo
processes (torchrun's machinery on one machine) with the same images per iteration in total, on
the embedded MNIST teacher, scored on the MNIST test set.

    python benchmarks/several_processes.py [--iterations 1000] [--nproc 2]

One process takes the defaults' batches (synthesis 64, student 128: condbn's, which `auto`
picks); each of N processes takes 1/N of them, so that an iteration of either handles the same
images. Reports top-1 and the training time (the run's own clock, start-up and evaluation not
counted) and writes benchmarks/results/several_processes.json. On a 2-core machine two processes
share the cores one process's threads would use, so this measures the cost of splitting the
work (gradient all-reduce, smaller batches), not a speed-up; several GPUs or nodes are where
--nproc pays (docs/gpus.md).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekd.fileio import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))
BATCH, STUDENT_BATCH = 64, 128


def distill(out: Path, iterations: int, nproc: int) -> dict:
    cmd = [sys.executable, "-m", "edgekd.cli", "distill", "--iterations", str(iterations),
           "--eval-data", str(DATA / "datasets/mnist"), "--out", str(out), "--no-progress"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc), "--set", f"batch_size={BATCH // nproc}",
                "--set", f"student_batch_size={STUDENT_BATCH // nproc}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"processes": nproc, "command": "edgekd " + " ".join(cmd[3:]).replace(str(out), "RUN").replace(str(DATA), "$EDGEKD_DATA"),
            "method": summary["method"], "iterations": summary["iterations"],
            "training_seconds": last["seconds"], "top1": summary["student_top1"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-nproc-"))
    rows = [distill(work / f"nproc{n}", args.iterations, n) for n in (1, args.nproc)]
    table = Table(title=f"embedded MNIST LeNet-5 -> lenet5_half, {args.iterations} iterations")
    for col in ("processes", "method", "top-1 %", "training s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["processes"]), r["method"], f"{r['top1']:.2f}", f"{r['training_seconds']:.1f}")
    Console().print(table)
    out = ROOT / "benchmarks/results/several_processes.json"
    write_json(out, {"date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "teacher": "edgekd/assets/mnist_lenet5.pt2", "student": "lenet5_half", "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
