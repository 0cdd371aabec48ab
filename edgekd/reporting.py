"""`edgekd report RUN_DIR`: one Markdown page and one self-contained HTML page (plots embedded as
base64 PNG) from whatever a run directory holds: training curves, synthetic samples, exports and
probe results. Every part is optional; the page says which parts are missing."""
import base64
import html
import io
import json
from pathlib import Path

import click
import numpy as np
import yaml

from .errors import EdgekdError
from .fileio import write_bytes, write_text
from .probes import latency_text

MEASURED, ESTIMATED = "#1f77b4", "#ff7f0e"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(run: Path) -> dict:
    """Everything the report can show, and a list of what is missing."""
    parts, missing = {}, []
    metrics = []
    if (run / "metrics.jsonl").is_file():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                metrics.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from an interrupted run
    parts["metrics"] = metrics
    if not metrics:
        missing.append("metrics.jsonl (training curves)")
    parts["summary"] = _read_json(run / "summary.json") if (run / "summary.json").is_file() else None
    if parts["summary"] is None:
        missing.append("summary.json")
    config = run / "config.yaml"
    parts["config"] = yaml.safe_load(config.read_text()) if config.is_file() else None
    if parts["config"] is None:
        missing.append("config.yaml")
    parts["samples"] = _samples(run / "generator.pt", parts["config"]) if (run / "generator.pt").is_file() else None
    if parts["samples"] is None:
        missing.append("generator.pt (synthetic samples)")
    export = _read_json(run / "export" / "export.json") if (run / "export" / "export.json").is_file() else None
    parts["exports"] = (export or {}).get("artifacts", [])
    parts["agreement_on"] = (export or {}).get("agreement_on", "held-out samples")
    if not parts["exports"]:
        missing.append("export/export.json (run `edgekd export`)")
    probes = []
    for folder in (run / "export" / "probes", run / "probes"):
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            result = _read_json(path)
            if isinstance(result, dict) and "device" in result and "latency_ms" in result:
                probes.append(result)
    parts["probes"] = probes
    if not probes:
        missing.append("export/probes/*.json (run `edgekd probe`)")
    parts["missing"] = missing
    return parts


def _samples(path: Path, config, n: int = 64):
    """A grid of generator samples as an (n, H, W, C) array in [0, 1] for display."""
    import torch

    from .generators import load_generators

    try:
        generator = load_generators(path)[0].eval()
    except Exception:  # noqa: BLE001 - an unreadable generator just leaves the grid out
        return None
    with torch.no_grad():
        x, _ = generator.sample(n, generator=torch.Generator().manual_seed(0))
    pre = (config or {}).get("preprocessing") or {}
    if pre.get("std") is not None:  # samples live in the teacher's normalised space
        x = x * torch.tensor(pre["std"]).view(1, -1, 1, 1) + torch.tensor(pre["mean"]).view(1, -1, 1, 1)
    else:  # no normalisation recorded: the generator's BatchNorm output is ~N(0, 1); show it as is, shifted
        x = (x - x.amin()) / (x.amax() - x.amin() + 1e-8)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _figure(width=7.0, height=3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_training(metrics) -> bytes | None:
    rows = [m for m in metrics if m.get("fidelity") is not None or m.get("student_top1") is not None]
    if not rows:
        return None
    fig, ax = _figure()
    for key, label in (("student_top1", "student top-1 on real data"), ("fidelity", "fidelity (agrees with teacher)")):
        points = [(m["seconds"] / 60, m[key]) for m in rows if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False, loc="lower right")
    ax.set_title("accuracy and fidelity during distillation", loc="left")
    return _png(fig)


def plot_samples(samples) -> bytes | None:
    if samples is None:
        return None
    n, h, w, c = samples.shape
    side = int(np.ceil(np.sqrt(n)))
    grid = np.ones((side * (h + 2), side * (w + 2), c), dtype=np.float32)
    for i, img in enumerate(samples):
        r, col = divmod(i, side)
        grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, col * (w + 2) + 1:col * (w + 2) + 1 + w] = img
    fig, ax = _figure(4.2, 4.2)
    ax.imshow(grid.squeeze(-1) if c == 1 else grid, cmap="gray" if c == 1 else None, interpolation="nearest")
    ax.axis("off")
    ax.set_title("synthetic samples from the generator", loc="left")
    return _png(fig)


def latency_value(result) -> float | None:
    lat = result.get("latency_ms") or {}
    return lat.get("p50", lat.get("mean", lat.get("estimate")))


def plot_latency(probes, exports) -> bytes | None:
    rows = [(f"{Path(p['model']).name} @ {p['device']}" + (f" ({p['runtime']})" if p["source"] == "estimated"
             and p.get("runtime") else ""), latency_value(p), p["source"]) for p in probes]
    rows += [(f"{Path(a['path']).name} @ the machine that exported", a["latency_ms"], "measured")
             for a in exports if a.get("latency_ms") is not None]
    rows = [r for r in rows if r[1]]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1])
    fig, ax = _figure(7.5, 0.9 + 0.38 * len(rows))
    colors = [MEASURED if r[2] == "measured" else ESTIMATED for r in rows]
    bars = ax.barh(range(len(rows)), [r[1] for r in rows], color=colors)
    for bar, r in zip(bars, rows):
        if r[2] != "measured":
            bar.set_hatch("//")
        value = f"{r[1]:,.0f}" if r[1] >= 100 else f"{r[1]:.3g}"  # 3,465 ms, never 3.47e+03
        ax.text(bar.get_width() * 1.05, bar.get_y() + bar.get_height() / 2, f"{value} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    if rows[-1][1] / max(rows[0][1], 1e-9) > 50:
        ax.set_xscale("log")
    ax.set_xlabel("latency per inference (ms; p50, else the mean, when measured)")
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=MEASURED, label="measured"), Patch(facecolor=ESTIMATED, hatch="//", label="estimated")],
              frameon=False, loc="lower right", fontsize=8)
    ax.set_title("latency per device and format", loc="left")
    ax.set_xlim(right=ax.get_xlim()[1] * (3 if ax.get_xscale() == "log" else 1.15))
    return _png(fig)


def plot_memory(probes) -> bytes | None:
    mcu = [p for p in probes if p.get("ram_budget_bytes") and p.get("flash_budget_bytes")]
    if not mcu:
        return None
    labels = [f"{Path(p['model']).name} @ {p['device']}" for p in mcu]
    ram = [100 * p["ram_bytes"] / p["ram_budget_bytes"] for p in mcu]
    flash = [100 * p["flash_bytes"] / p["flash_budget_bytes"] for p in mcu]
    fig, ax = _figure(7.5, 1.2 + 0.6 * len(mcu))
    y = np.arange(len(mcu))
    ax.barh(y + 0.2, ram, height=0.38, label="RAM (arena + runtime)", color="#2ca02c")
    ax.barh(y - 0.2, flash, height=0.38, label="flash (model + runtime)", color="#9467bd")
    for i, p in enumerate(mcu):
        ax.text(ram[i] + 1, i + 0.2, f"{p['ram_bytes'] / 1024:.0f} / {p['ram_budget_bytes'] / 1024:.0f} KiB", va="center", fontsize=8)
        ax.text(flash[i] + 1, i - 0.2, f"{p['flash_bytes'] / 1024:.0f} / {p['flash_budget_bytes'] / 1024:.0f} KiB", va="center", fontsize=8)
    ax.axvline(100, color="red", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("% of the microcontroller's budget (red line: full)")
    ax.set_xlim(0, max(110, max(ram + flash) * 1.3))
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    ax.set_title("memory against each microcontroller's budget", loc="left")
    return _png(fig)


def _kib(n) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


def _fmt(v, spec="{:.2f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    return spec.format(v) if isinstance(v, float) else str(v)


# The run summary's keys as a reader wants them: (label, unit); keys not listed show as they are.
RUN_LABELS = {
    "method": ("method", ""), "student": ("student", ""), "iterations": ("iterations", ""),
    "wall_seconds": ("training time", " s"), "student_top1": ("student top-1 on real data", " %"),
    "teacher_top1": ("teacher top-1 on real data", " %"), "fidelity": ("fidelity: agrees with the teacher on real data", " %"),
    "quality": ("quality without data", ""),
    "probe_agreement": ("agrees with the teacher on its probe set (not a quality estimate)", " %"),
    "teacher_queries": ("teacher queries in training", ""),
    "max_queries": ("query budget", ""), "teacher_queries_not_budgeted": ("teacher queries before training", ""),
    "rollbacks": ("roll-backs after NaN losses", ""), "pool_size": ("synthetic images pooled", ""),
    "augment_flip": ("mirror augmentation", ""), "device": ("trained on", ""), "precision": ("precision", ""),
    "processes": ("processes", ""),
}


def _run_rows(summary: dict) -> list:
    rows = []
    for key, value in summary.items():
        if key == "run_dir" or isinstance(value, (dict, list)) or (key == "max_queries" and value is None):
            continue
        label, unit = RUN_LABELS.get(key, (key, ""))
        text = ("on" if value else "off") if isinstance(value, bool) else _fmt(value)
        rows.append([label, text + unit if value is not None else text])
    return rows


def tables(parts) -> list:
    """(title, header, rows, note) for every table the report shows."""
    out = []
    summary = dict(parts["summary"] or {})
    config = parts["config"] or {}
    if config.get("teacher"):
        summary = {"teacher": Path(config["teacher"]["path"]).name, **summary}
    if summary:
        out.append(("Run", ["", ""], _run_rows(summary), None))
    if parts["exports"]:
        out.append(("Exports", ["file", "format", "precision", "size", "agrees with the float model %", "top-1 %",
                                "latency here, ms", "ops"],
                    [[Path(a.get("path", "?")).name, _fmt(a.get("format")), _fmt(a.get("precision")),
                      _kib(a.get("size_bytes")), _fmt(a.get("agreement")), _fmt(a.get("top1")),
                      _fmt(a.get("latency_ms"), "{:.3f}"), ", ".join(a.get("ops") or []) or "-"]
                     for a in parts["exports"]],
                    f"Agreement: top-1 class the same as the float PyTorch model's, on {parts['agreement_on']}. "
                    "Top-1 on real data when the export was given --eval-data. Latency: median of 30 runs on "
                    "one thread of the machine that exported."))
    if parts["probes"]:
        rows = []
        for p in parts["probes"]:
            latency = latency_text(p["latency_ms"])
            fits = "-" if p.get("fits") is None else "yes" if p["fits"] else "NO"
            device = p["device"] + (f" ({p['runtime']})" if p["source"] == "estimated" and p.get("runtime") else "")
            rows.append([Path(p["model"]).name, device, p["source"], latency, _fmt(p.get("top1")),
                         _kib(p.get("ram_bytes")), _kib(p.get("flash_bytes")), fits,
                         ", ".join(sorted({u["op"] for u in p.get("unsupported_ops", [])})) or "-"])
        out.append(("Probes", ["model", "device", "source", "latency (measured percentiles, mean, or ~estimate)",
                               "top-1 %", "RAM", "flash", "fits", "unsupported ops"], rows, None))
    return out


PLOTS = (("training", "Accuracy and fidelity during distillation"), ("samples", "Synthetic samples"),
         ("latency", "Latency per device and format"), ("memory", "Memory against microcontroller budgets"))


def render(run: Path, parts) -> dict:
    images = {"training": plot_training(parts["metrics"]), "samples": plot_samples(parts["samples"]),
              "latency": plot_latency(parts["probes"], parts["exports"]), "memory": plot_memory(parts["probes"])}
    return {"tables": tables(parts), "images": {k: v for k, v in images.items() if v}}


def markdown(run: Path, parts, rendered) -> str:
    lines = [f"# edgekd report: {run.name}", ""]
    for title, header, rows, note in rendered["tables"]:
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows] + [""]
        lines += [note, ""] if note else []
    for key, title in PLOTS:
        if key in rendered["images"]:
            lines += [f"## {title}", "", f"![{title}](report-{key}.png)", ""]
    if parts["missing"]:
        lines += ["## Not in this run directory", ""] + [f"- {m}" for m in parts["missing"]] + [""]
    lines += ["Latencies marked *estimated* come from the device profile's documented model, not a device."]
    return "\n".join(lines) + "\n"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f5f5f5}tr:nth-child(even) td{background:#fafafa}img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.missing{color:#888}.note{color:#666;font-size:.85em}"""


def html_page(run: Path, parts, rendered) -> str:
    esc = html.escape
    body = [f"<h1>edgekd report: {esc(run.name)}</h1>"]
    for title, header, rows, note in rendered["tables"]:
        head = "".join(f"<th>{esc(h)}</th>" for h in header) if any(header) else ""
        body.append(f"<h2>{esc(title)}</h2><table>" + (f"<tr>{head}</tr>" if head else "")
                    + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
                    + "</table>" + (f"<p class='note'>{esc(note)}</p>" if note else ""))
    for key, title in PLOTS:
        if key in rendered["images"]:
            data = base64.b64encode(rendered["images"][key]).decode()
            body.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{data}'>")
    if parts["missing"]:
        body.append("<h2>Not in this run directory</h2><ul class='missing'>"
                    + "".join(f"<li>{esc(m)}</li>" for m in parts["missing"]) + "</ul>")
    body.append("<p class='note'>Latencies marked <i>estimated</i> come from the device profile's documented "
                "model, not a device; hatched bars in the latency plot are estimates.</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgekd report: {esc(run.name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def build_report(run, out=None) -> tuple:
    run = Path(run)
    if not run.is_dir():
        raise EdgekdError(f"run directory {run} not found")
    parts = collect(run)
    if len(parts["missing"]) == 6:
        raise EdgekdError(f"{run} holds nothing edgekd can report on (no metrics, summary, config, exports or probes)")
    out = Path(out) if out else run / "report"
    rendered = render(run, parts)
    for key, png in rendered["images"].items():
        write_bytes(out / f"report-{key}.png", png)
    write_text(out / "report.md", markdown(run, parts, rendered))
    write_text(out / "report.html", html_page(run, parts, rendered))
    return out / "report.md", out / "report.html", parts["missing"]


@click.command()
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--out", type=click.Path(), help="folder for report.md, report.html and the PNGs [RUN_DIR/report]")
def report(run_dir, out):
    """Markdown + self-contained HTML report of a run (the latest under ./runs when RUN_DIR is
    omitted): curves, samples, exports and probes."""
    from . import api

    written = api.report(run_dir, out=out, log=click.echo)
    click.echo(f"wrote {written['markdown']} and {written['html']}")
    for m in written["missing"]:
        click.echo(f"  not found: {m}")
