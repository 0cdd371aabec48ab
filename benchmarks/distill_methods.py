"""Every distillation method on MNIST for the same wall-clock budget, on this machine.

    python benchmarks/distill_methods.py [--minutes 3] [--teacher FILE] [--student lenet5_half]

Teacher: the embedded MNIST LeNet-5 (unless --teacher); student: lenet5_half. The first row is
DAFL with its published MNIST settings (recipes/dafl-mnist-lenet5.yaml) as the baseline; the
others run each method with edgekd's defaults. Prints a table and writes
benchmarks/results/distill_methods.json. Real data from $EDGEKD_DATA (default ../shared).
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

import torch
from rich.console import Console
from rich.table import Table

from edgekd.fileio import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))
ROWS = [  # (label, distill arguments)
    ("dafl (published settings)", ["--recipe", str(ROOT / "recipes" / "dafl-mnist-lenet5.yaml")]),
    ("dafl", ["--method", "dafl"]),
    ("bnstats", ["--method", "bnstats"]),
    ("ddad", ["--method", "ddad"]),
    ("cgdd", ["--method", "cgdd"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per method")
    ap.add_argument("--teacher", default=str(ROOT / "edgekd" / "assets" / "mnist_lenet5.pt2"))
    ap.add_argument("--student", default="lenet5_half")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distill_methods.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekd-distill-bench-"))
    results = []
    for label, extra in ROWS:
        run = work / label.split()[0] / ("published" if "published" in label else "defaults")
        cmd = [sys.executable, "-m", "edgekd.cli", "distill", args.teacher, *extra, "--student", args.student,
               "--time-budget", str(args.minutes), "--eval-data", str(DATA / "datasets" / "mnist"),
               "--out", str(run), "--no-progress", "--eval-every", "50"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((run / "summary.json").read_text())
        results.append({"method": label, **{k: summary[k] for k in
                        ("iterations", "wall_seconds", "student_top1", "teacher_top1", "fidelity")}})
    table = Table(title=f"MNIST, {Path(args.teacher).name} -> {args.student}, {args.minutes:g} min each, "
                        f"{torch.get_num_threads()} threads")
    for col in ("method", "iterations", "seconds", "student top-1 %", "fidelity %"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        table.add_row(r["method"], str(r["iterations"]), f"{r['wall_seconds']:.0f}", f"{r['student_top1']:.2f}",
                      f"{r['fidelity']:.2f}")
    Console().print(table)
    write_json(args.out, {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
                          "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                          "minutes_per_method": args.minutes, "teacher": args.teacher, "student": args.student,
                          "rows": results})


if __name__ == "__main__":
    main()
