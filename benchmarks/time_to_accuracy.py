"""Time to accuracy: every distillation method on the same teacher and student for the same
training time on this machine, with the student's top-1 on real test data as training goes.

    python benchmarks/time_to_accuracy.py cifar10 [--minutes 40] [--methods fast,bnstats] [--threads N]
    python benchmarks/time_to_accuracy.py mnist [--minutes 40]
    python benchmarks/time_to_accuracy.py mnist-nobn [--minutes 10]
    python benchmarks/time_to_accuracy.py mnist-tflite-int8 [--minutes 10]
    python benchmarks/time_to_accuracy.py cifar10-onnx [--minutes 30]
    python benchmarks/time_to_accuracy.py cifar10 --reference real-data --methods condbn --minutes 20

Cases (teachers made from ../shared, or $EDGEKD_DATA, into a temporary folder):
  cifar10     CIFAR-10 ResNet-56 (akamaster weights, 93.39 %) as a .pt2 -> resnet20
  mnist       edgekd's embedded MNIST LeNet-5 (with BatchNorm) -> lenet5_half: `auto` (the README's
              first command), DAFL with its published settings (recipes/dafl-mnist-lenet5.yaml, the
              baseline), then every method
  mnist-nobn  the advertorch MNIST LeNet-5 (no BatchNorm, 98.89 %) -> lenet5_half
  mnist-tflite-int8  the embedded LeNet-5 as an int8 .tflite (`edgekd export --tflite --int8
              --int8-io`), a teacher edgekd can only query -> lenet5_half; logits, then labels only
  cifar10-onnx  the ResNet-56 as torch.onnx.export writes it by default (opset 18+, batch 1) ->
              resnet20: queried through onnxruntime, and through the torch graph edgekd rebuilds
Every method runs `edgekd distill` with its defaults (nothing tuned per case) and is evaluated
on the full test set after every minute of training (evaluations are not counted as training
time). Prints top-1 at 5 / 10 / 20 / 40 minutes (those within --minutes) and writes the curves
to benchmarks/results/time_to_accuracy_<case>.json and a plot next to it.

--reference real-data: the ceiling beside the data-free run. The test set is split in two; knowledge
distillation on the first half (benchmarks/real_data_kd.py) runs pinned to core 1 while the first
data-free row runs pinned to core 0, one thread each, the same wall-clock budget; every row is
scored on the second half, and the table adds each row's ratio to real-data KD at every mark.
Machines differ in speed; the ratio, measured side by side, does not. Results go to
time_to_accuracy_<case>_vs_real.json.
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
import yaml
from rich.console import Console
from rich.table import Table

from edgekd.fileio import write_bytes, write_json
from edgekd.teacher import save_export

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))
MARKS = (5, 10, 20, 40, 60)
sys.path.insert(0, str(ROOT / "tests"))
from shared_teachers import CIFAR_MEAN, CIFAR_STD, advertorch_lenet5, cifar_resnet  # noqa: E402


def cifar10_teacher(folder: Path) -> Path:
    save_export(cifar_resnet(DATA, 56), (3, 32, 32), folder / "resnet56.pt2", {"mean": CIFAR_MEAN, "std": CIFAR_STD})
    return folder / "resnet56.pt2"


def mnist_nobn_teacher(folder: Path) -> Path:
    save_export(advertorch_lenet5(DATA), (1, 28, 28), folder / "lenet5_advertorch.pt2")
    return folder / "lenet5_advertorch.pt2"


def mnist_tflite_int8_teacher(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "edgekd.cli", "export", str(ROOT / "edgekd/assets/mnist_lenet5.pt2"),
                    "--tflite", "--int8", "--int8-io", "--out", str(folder / "export")], check=True,
                   stdout=subprocess.DEVNULL)
    return folder / "export" / "mnist_lenet5.int8.tflite"


def cifar10_onnx_teacher(folder: Path) -> Path:
    torch.onnx.export(cifar_resnet(DATA, 56), (torch.zeros(1, 3, 32, 32),), str(folder / "resnet56.onnx"))  # the defaults
    return folder / "resnet56.onnx"


CIFAR_PREPROCESSING = ["--mean", ",".join(map(str, CIFAR_MEAN)), "--std", ",".join(map(str, CIFAR_STD))]

CASES = {  # name: (teacher maker, student, eval data, rows of (label, extra distill arguments))
    "cifar10": (cifar10_teacher, "resnet20", "datasets/cifar10",
                [(m, ["--method", m]) for m in ("condbn", "fast", "bnstats", "ddad", "dafl", "cgdd")]),
    "mnist": (lambda folder: ROOT / "edgekd/assets/mnist_lenet5.pt2", "lenet5_half", "datasets/mnist",
              [("auto", ["--method", "auto"]),
               ("dafl (published settings)", ["--recipe", str(ROOT / "recipes/dafl-mnist-lenet5.yaml")])]
              + [(m, ["--method", m]) for m in ("condbn", "fast", "bnstats", "ddad", "dafl", "cgdd")]),
    "mnist-nobn": (mnist_nobn_teacher, "lenet5_half", "datasets/mnist",
                   [("auto", ["--method", "auto"])] + [(m, ["--method", m]) for m in ("dafl", "dafl-zo", "cgdd")]),
    "mnist-tflite-int8": (mnist_tflite_int8_teacher, "lenet5_half", "datasets/mnist",
                          [("auto (logits)", ["--method", "auto"]),
                           ("auto (labels only)", ["--method", "auto", "--teacher-output", "label"])]),
    "cifar10-onnx": (cifar10_onnx_teacher, "resnet20", "datasets/cifar10",
                     [("query-only (onnxruntime)", ["--teacher-backend", "runtime", *CIFAR_PREPROCESSING]),
                      ("gradients (torch graph)", ["--method", "auto", *CIFAR_PREPROCESSING])]),
}


def curve(run: Path) -> list[dict]:
    """(minutes of training, top-1) after each evaluation; the last one is the final, full-set one."""
    points = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    out = [{"minutes": round(p["seconds"] / 60, 2), "top1": p["student_top1"], "teacher_queries": p["teacher_queries"]}
           for p in points]
    out[-1]["top1"] = summary["student_top1"]
    return out


def split_test_set(data: Path, folder: Path) -> tuple[Path, Path]:
    """The test set's first half (what real-data KD learns from) and second half (what every
    row is scored on), as .npz files."""
    import numpy as np

    from edgekd.data import load_dataset

    test = load_dataset(data, "test")
    half = len(test) // 2
    paths = folder / "real_train.npz", folder / "real_scored.npz"
    for path, part in zip(paths, (slice(0, half), slice(half, None))):
        np.savez(path, x=test.x[part].numpy(), y=test.y[part].numpy())
    return paths


def pinned(core: int):
    """A subprocess start hook: run on one core only."""
    return lambda: os.sched_setaffinity(0, {core})


def preprocessing_args(extra: list[str]) -> list[str]:
    """The --mean/--std pairs of a row's distill arguments (for a teacher file that lacks them)."""
    return [a for i, a in enumerate(extra) if a in ("--mean", "--std") or (i and extra[i - 1] in ("--mean", "--std"))]


def at_mark(points: list[dict], minutes: float) -> float | None:
    """Top-1 at the first evaluation made once `minutes` of training were done."""
    after = [p for p in points if p["minutes"] >= minutes - 0.01]
    return after[0]["top1"] if after else None


def plot(results, title: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for r in results:
        ax.plot([0] + [p["minutes"] for p in r["curve"]], [None] + [p["top1"] for p in r["curve"]],
                marker=".", label=r["method"])
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("student top-1 % (test set)")
    ax.set_title(title, loc="left", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    write_bytes(path, tmp.read_bytes())
    tmp.unlink()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--minutes", type=float, default=40.0, help="training time per method")
    ap.add_argument("--methods", help="comma-separated row labels to run (default: all)")
    ap.add_argument("--threads", type=int, help="CPU threads per run (default: torch's, all cores)")
    ap.add_argument("--reference", choices=["real-data"],
                    help="also run KD on half the test set, side by side, one core each (see above)")
    ap.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/time_to_accuracy_<case>.json)")
    args = ap.parse_args()
    make_teacher, student, data, rows = CASES[args.case]
    if args.methods:
        rows = [r for r in rows if r[0] in args.methods.split(",")]
    suffix = "_vs_real" if args.reference else ""
    out = args.out or ROOT / "benchmarks" / "results" / f"time_to_accuracy_{args.case}{suffix}.json"
    work = Path(tempfile.mkdtemp(prefix="edgekd-tta-"))
    teacher = make_teacher(work)
    threads = 1 if args.reference else args.threads
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    scored = DATA / data
    reference = None
    if args.reference:
        real_train, scored = split_test_set(DATA / data, work)
        kd_cmd = [sys.executable, str(ROOT / "benchmarks/real_data_kd.py"), str(teacher), "--student", student,
                  "--train", str(real_train), "--scored", str(scored), "--minutes", str(args.minutes),
                  "--out", str(work / "kd.json"), *preprocessing_args(rows[0][1])]
        print("$", " ".join(kd_cmd[1:]), "(core 1)", flush=True)
        reference = subprocess.Popen(kd_cmd, stdout=subprocess.DEVNULL, env=env, preexec_fn=pinned(1))
    results = []
    for label, extra in rows:
        run = work / label.replace(" ", "_").replace("(", "").replace(")", "")
        cmd = [sys.executable, "-m", "edgekd.cli", "distill", str(teacher), *extra, "--student", student,
               "--time-budget", str(args.minutes), "--eval-data", str(scored), "--eval-every", "1min",
               "--out", str(run), "--no-progress"]
        print("$ edgekd", " ".join(cmd[3:]), "(core 0)" if args.reference else "", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env,
                       preexec_fn=pinned(0) if args.reference else None)
        summary = json.loads((run / "summary.json").read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())
        results.append({"method": label, "resolved_method": summary["method"], "iterations": summary["iterations"],
                        "teacher_queries": summary["teacher_queries"],
                        "teacher_top1": summary["teacher_top1"], "curve": curve(run),
                        "settings": config["settings"]})
    marks = sorted({m for m in MARKS if m <= args.minutes} | {args.minutes})  # the budget's end is always a mark
    if reference is not None:
        if reference.wait() != 0:
            sys.exit("real-data KD failed")
        kd = json.loads((work / "kd.json").read_text())
        results.append({"method": kd["method"], "steps": kd["steps"], "teacher_queries": kd["steps"] * 128,
                        "train_images": kd["train_images"], "curve": kd["curve"]})
        for r in results[:-1]:
            r["ratio_to_real_data_kd"] = {f"{m:g}": round(a / b, 3) for m in marks
                                          if (a := at_mark(r["curve"], m)) and (b := at_mark(kd["curve"], m))}
    table = Table(title=f"{args.case}: {teacher.name} -> {student}, top-1 % after N minutes of training, "
                        f"{threads or torch.get_num_threads()} threads" + (", one core each" if args.reference else ""))
    table.add_column("method")
    for m in marks:
        table.add_column(f"{m:g} min", justify="right")
    table.add_column("teacher queries", justify="right")
    for r in results:
        table.add_row(r["method"], *(f"{v:.2f}" if (v := at_mark(r["curve"], m)) is not None else "-" for m in marks),
                      f"{r['teacher_queries']:,}")
        if "ratio_to_real_data_kd" in r:
            table.add_row("  ratio to real-data KD", *(f"{r['ratio_to_real_data_kd'].get(f'{m:g}', 0):.2f}x"
                                                         for m in marks), "")
    Console(width=140).print(table)
    write_json(out, {"date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "threads": threads or torch.get_num_threads(), "case": args.case,
                     "reference": args.reference, "scored_on": "second half of the test set" if args.reference
                     else "the test set",
                     "teacher": teacher.name, "student": student, "minutes": args.minutes,
                     "teacher_top1": results[0]["teacher_top1"] if results else None,  # on what rows are scored on
                     "rows": [{k: v for k, v in r.items() if k != "teacher_top1"} for r in results]})
    plot(results, f"{args.case}: {teacher.name} -> {student} ({threads or torch.get_num_threads()} threads)",
         out.with_suffix(".png"))


if __name__ == "__main__":
    main()
