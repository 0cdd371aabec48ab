"""Quality figures without data, against the truth: can a run say how good its student is when
the user has no labelled images? Run over finished `edgekd distill` runs that had --eval-data:

    python benchmarks/quality_estimates.py RUN [RUN ...] [--out PATH]

For each run, the truth is the student's agreement with the teacher on the run's eval data
(student top-1 over teacher top-1 beside it), and each candidate is an agreement that needs no
data: on 2,000 fresh samples of the run's own generator ("generator"), on those of them the
teacher gives at least 0.9 probability ("confident"), and on 2,000 procedural images (dead leaves
and 1/f noise, which any teacher can be asked about: "procedural"). A candidate worth showing
would stay within 5 points of the truth on every run (issue 27); `edgekd distill` shows none
while none does. Writes benchmarks/results/quality_estimates.json.
"""
import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

import edgekd
from edgekd.data import load_dataset
from edgekd.distillation import resolve_settings
from edgekd.fileio import write_json
from edgekd.generators import ProceduralImages, load_generators

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, CONFIDENT = 2000, 0.9
CANDIDATES = ("generator", "confident", "procedural")
WITHIN = 5.0  # points of agreement


def label(config: dict) -> str:
    """The run's method and the settings it changed from that method's defaults of today. A
    setting today's code lacks was a trial's switch: named when it was on, left out when off (0)."""
    defaults = resolve_settings(config["method"], {}, {})
    changed = [f"{k}={v}" for k, v in config["settings"].items()
               if (defaults[k] != v if k in defaults else v)]
    return config["method"] + (f" ({', '.join(changed)})" if changed else "")


@torch.no_grad()
def answers(model, x, batch=250) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def agreement(student_logits, teacher_logits) -> float:
    return round(100.0 * (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item(), 2)


def measure(run: Path) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    if not config.get("eval_data"):
        raise SystemExit(f"{run}: the run had no --eval-data, so there is no truth to compare with")
    teacher = edgekd.load_teacher(config["teacher"]["path"])
    student = torch.export.load(run / "student.pt2").module()
    shape, pre = config["teacher"]["input_shape"], config["preprocessing"]
    mean = torch.tensor(pre["mean"] or [0.0] * shape[0]).view(1, -1, 1, 1)
    std = torch.tensor(pre["std"] or [1.0] * shape[0]).view(1, -1, 1, 1)
    data = load_dataset(config["eval_data"])
    real = (data.x - mean) / std
    s_real, t_real = answers(student, real), answers(teacher, real)
    seeded = torch.Generator().manual_seed(0)
    generator = load_generators(run / "generator.pt")[0]
    with torch.no_grad():
        fresh = torch.cat([generator.sample(250, seeded)[0] for _ in range(SAMPLES // 250)])
    s_gen, t_gen = answers(student, fresh), answers(teacher, fresh)
    confident = t_gen.softmax(1).max(1).values >= CONFIDENT
    procedural = ProceduralImages(shape, pre["mean"], pre["std"]).sample(SAMPLES, seeded)[0]
    top1 = lambda logits: 100.0 * (logits.argmax(1) == data.y).float().mean().item()  # noqa: E731
    return {"run": run.name, "method": label(config), "teacher": Path(config["teacher"]["path"]).name,
            "student": config["student"], "minutes": config["time_budget_minutes"],
            "student_top1": round(top1(s_real), 2), "teacher_top1": round(top1(t_real), 2),
            "truth": agreement(s_real, t_real),
            "generator": agreement(s_gen, t_gen),
            "confident": agreement(s_gen[confident], t_gen[confident]) if confident.any() else None,
            "confident_share": round(100.0 * confident.float().mean().item(), 1),
            "procedural": agreement(answers(student, procedural), answers(teacher, procedural))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/quality_estimates.json")
    args = ap.parse_args()
    rows = [measure(run) for run in args.runs]
    table = Table(title="agreement with the teacher on real images (truth), % and each candidate's error, points")
    for col in ("method", "teacher", "student top-1", "truth", *CANDIDATES):
        table.add_column(col, justify="left" if col in ("method", "teacher") else "right")
    for r in rows:
        table.add_row(r["method"], r["teacher"], f"{r['student_top1']:.2f}", f"{r['truth']:.2f}",
                      *("-" if r[c] is None else f"{r[c] - r['truth']:+.2f}" for c in CANDIDATES))
    Console().print(table)
    summary = {}
    for c in CANDIDATES:
        errors = [r[c] - r["truth"] for r in rows if r[c] is not None]
        summary[c] = {"runs": len(errors), "within": sum(abs(e) <= WITHIN for e in errors),
                      "lowest_error": round(min(errors), 2), "highest_error": round(max(errors), 2)}
        print(f"{c}: within {WITHIN:g} points of the truth on {summary[c]['within']} of {len(errors)} runs, "
              f"errors {summary[c]['lowest_error']:+.2f} to {summary[c]['highest_error']:+.2f}")
    write_json(args.out, {"date": datetime.date.today().isoformat(),
                          "command": " ".join(["python", "benchmarks/quality_estimates.py", "RUN ..."]),
                          "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                          "samples": SAMPLES, "confident": CONFIDENT, "within": WITHIN,
                          "rows": rows, "summary": summary})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
