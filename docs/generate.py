"""Rewrite the results tables of README.md and docs/*.md from benchmarks/results/*.json.

Every table sits between `<!-- generated: NAME -->` and `<!-- end generated -->`; the prose
around it is written by hand and left alone, so a number in a table can never drift from its
file. NAME is one of

  - a pattern of results file names without `.json` (`mcu_arena`, `throughput_mnist_*`,
    `time_to_accuracy_*_vs_real`): the tables of the files it matches;
  - `headline`: the README's few main figures;
  - `other-results`: every results file that no other block shows: its table when this script
    knows its kind, else its command and date, so a new file shows up on the next run.

The device-estimate tables read benchmarks/results/device_validation.json; without it, the
MLPerf Tiny fits edgekd ships (edgekd/assets/mcu_latency_fits.json) stand in.

    python docs/generate.py           rewrite the tables
    python docs/generate.py --check   only compare; exit 1 naming every table that differs
"""
import argparse
import fnmatch
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated: (?P<name>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
FITS = Path("edgekd/assets/mcu_latency_fits.json")
SPECIAL = ("headline", "other-results")

# mcu_arena.json records file names only; these say what the files are (text, no figures).
MODEL_NAMES = {
    "pretrainedResnet_quant.tflite": "MLPerf Tiny ResNet-8 (image classification), int8",
    "kws_ref_model.tflite": "MLPerf Tiny DS-CNN (keyword spotting), int8",
    "vww_96_int8.tflite": "MLPerf Tiny MobileNetV1-0.25 (visual wake words), int8",
    "ad01_int8.tflite": "MLPerf Tiny FC autoencoder (anomaly detection), int8",
    "pretrainedResnet.tflite": "MLPerf Tiny ResNet-8, float32",
    "mnist_lenet5.fp32.tflite": "embedded LeNet-5, `edgekd export --tflite`, float32",
    "mnist_lenet5.int8.tflite": "embedded LeNet-5, `edgekd export --tflite --int8`",
}


class Doc:
    """What a renderer needs to know about the page it writes into: where links start from."""

    def __init__(self, root: Path, path: Path):
        self.root, self.path = root, path

    def link(self, target: str) -> str:
        return Path(os.path.relpath(self.root / target, self.path.parent)).as_posix()

    def file(self, stem: str) -> str:
        return f"[`{stem}.json`]({self.link(f'benchmarks/results/{stem}.json')})"


# ---------------------------------------------------------------- reading


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def load_results(root: Path) -> dict[str, dict]:
    results = {}
    for path in sorted((root / "benchmarks" / "results").glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"cannot read {path.relative_to(root)}: {e}") from None
    return results


def kind(stem: str) -> str | None:
    """Which renderer knows a results file, by the name its benchmark script gives it."""
    for prefix in ("time_to_accuracy", "throughput", "export_formats", "mcu_arena", "device_validation",
                   "large_inputs", "several_processes", "quality_estimates"):
        if stem == prefix or stem.startswith(prefix + "_"):
            return prefix
    return None


def matching(pattern: str, results: dict) -> list[str]:
    return [stem for stem in results if fnmatch.fnmatchcase(stem, pattern)]


# ---------------------------------------------------------------- formatting


def table(header: list[str], rows: list[list], right_from: int = 1) -> str:
    """A Markdown table; columns from `right_from` on are numbers, aligned right."""
    cell = lambda value: str(value).replace("|", "\\|")  # noqa: E731 - a pipe would end the cell
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < right_from else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(data: dict, doc: Doc, stem: str, extra: str = "") -> str:
    """The command and date the file records (or says it does not), and the file itself."""
    command = f"`{data['command']}`" if data.get("command") else "command not recorded in the file"
    date = data.get("date") or "date not recorded"
    return f"{command}, {date}; {doc.file(stem)}{extra}"


def pct(value) -> str:
    return f"{value:.2f}"


def signed(value: float, digits: int = 2) -> str:
    return f"{value + 0.0:+.{digits}f}"  # + 0.0: no "-0.00"


# ---------------------------------------------------------------- time to accuracy


def marks(minutes: float) -> list[float]:
    """Minute marks for the columns: every minute of a short run, a few of a long one."""
    if minutes <= 10:
        return [float(m) for m in range(1, int(minutes) + 1)]
    return [float(m) for m in (1, 2, 5, *range(10, int(minutes) + 1, 10))] + ([minutes] if minutes % 10 else [])


def at(curve: list[dict], mark: float, key: str = "top1"):
    """The curve's point nearest the mark (evaluations land a few seconds after it), or None."""
    near = [p for p in curve if abs(p["minutes"] - mark) <= 0.5 and p.get(key) is not None]
    return min(near, key=lambda p: abs(p["minutes"] - mark))[key] if near else None


def method_label(row: dict) -> str:
    method, resolved = row["method"], row.get("resolved_method")
    return method if not resolved or resolved == method else f"{method} → {resolved}"


def time_to_accuracy(stem: str, data: dict, doc: Doc) -> str:
    columns = marks(data["minutes"])
    rows = data["rows"]
    queries = any("teacher_queries" in r for r in rows)
    header = ["method", "iterations", *(["teacher queries"] if queries else []),
              *(f"{m:g} min" for m in columns)]
    body = []
    for r in rows:
        steps = r.get("iterations", r.get("steps"))
        body.append([method_label(r), f"{steps:,}" if steps is not None else "-",
                     *([f"{r['teacher_queries']:,}" if "teacher_queries" in r else "-"] if queries else []),
                     *(pct(v) if (v := at(r["curve"], m)) is not None else "-" for m in columns)])
    for r in rows:  # side-by-side runs record the data-free student's ratio to the reference
        if "ratio_to_real_data_kd" in r:
            ratios = r["ratio_to_real_data_kd"]
            body.append([f"{method_label(r)}: ratio to real-data KD", "", *([""] if queries else []),
                         *(f"{ratios[f'{m:g}']:.2f}x" if f"{m:g}" in ratios else "-" for m in columns)])
    plot = f"{stem}.png"
    has_plot = (doc.root / "benchmarks" / "results" / plot).is_file()
    extra = f", [plot]({doc.link(f'benchmarks/results/{plot}')})" if has_plot else ""
    scored = f", scored on the {data['scored_on']}" if data.get("scored_on") else ""
    teacher_top1 = f" ({pct(data['teacher_top1'])} %)" if data.get("teacher_top1") is not None else ""
    n = data.get("threads")
    threads = f", {n} thread{'s' if n != 1 else ''}{' each' if 'reference' in data else ''}" if n else ""
    caption = (f"**{data['case']}**: {data['teacher']}{teacher_top1} → {data['student']}{threads}, "
               f"{data['minutes']:g}-minute budget{scored}; top-1 % at each minute.  \n"
               + provenance(data, doc, stem, extra))
    return caption + "\n\n" + table(header, body)


# ---------------------------------------------------------------- throughput


def throughput(stems: list[str], results: dict, doc: Doc) -> str:
    """One table for several runs of one case: every row of every run, numbered by run."""
    body, runs = [], []
    for n, stem in enumerate(stems, 1):
        data = results[stem]
        runs.append(f"{n}. {data['case']}, {data['device']}, {data['precision']}, {data['threads']} "
                    f"thread{'s' if data['threads'] != 1 else ''}"
                    f"{', torch.compile' if data.get('compile') else ''}: {provenance(data, doc, stem)}")
        for r in data["rows"]:
            body.append([r["what"], f"{r['edgekd']:,.0f}", f"{r['hand_written']:,.0f}", f"{r['ratio']:.2f}", n])
    return (table(["stage or iteration", "edgekd img/s", "hand-written img/s", "ratio", "run"], body)
            + "\n\nRuns:\n\n" + "\n".join(runs))


# ---------------------------------------------------------------- export, arena


def export_formats(stem: str, data: dict, doc: Doc) -> str:
    body = [[r["model"], r["calibration"], r["format"], r["precision"], f"{r['size_bytes'] / 1024:.1f}",
             f"{r['size_vs_fp32']:.2f}", pct(r["top1"]), signed(r["top1_drop"]), pct(r["agreement"]),
             f"{r['latency_ms']:.2f}"] for r in data["rows"]]
    samples = data.get("test_samples")
    caption = (f"Top-1 on {'the first ' + str(samples) if isinstance(samples, int) else samples} test images; "
               "drop = fp32 top-1 minus this file's; agree = same class as the fp32 file; ms = median latency, "
               "batch 1, one thread.  \n" + provenance(data, doc, stem))
    return caption + "\n\n" + table(["model", "calibration", "format", "precision", "KB", "× fp32", "top-1 %",
                                     "drop", "agree %", "ms"], body, right_from=4)


def large_inputs(stem: str, data: dict, doc: Doc) -> str:
    rates = lambda st: (f"generator updates {st['generator_images_per_s']}, student rounds "  # noqa: E731
                        f"{st['student_round_images_per_s']}" if "generator_images_per_s" in st else "")
    body = [[st["stage"], f"`{st['command'].split(' /')[0]} ...`", f"{st['seconds']:.0f}", f"{st['peak_rss_mb']:,}",
             rates(st)] for st in data["stages"]]
    caption = (f"{data['teacher']}, input {'x'.join(map(str, data['input']))}, {data['classes']:,} classes → "
               f"{data['student']}, {data['threads']} threads ({data['machine']}).  \n" + provenance(data, doc, stem))
    return caption + "\n\n" + table(["stage", "command", "seconds", "peak RSS (MB)", "images/s"], body, right_from=2)


def several_processes(stem: str, data: dict, doc: Doc) -> str:
    body = [[r["processes"], f"`{r['command']}`", r["method"], f"{r['iterations']:,}", pct(r["top1"]),
             f"{r['training_seconds']:.1f}"] for r in data["rows"]]
    caption = f"{data['teacher']} → {data['student']} ({data['machine']}).  \n" + provenance(data, doc, stem)
    return caption + "\n\n" + table(["processes", "command", "method", "iterations", "top-1 %", "training s"],
                                     body, right_from=3)


def quality_estimates(stem: str, data: dict, doc: Doc) -> str:
    candidates = list(data["summary"])
    body = [[r["method"], r["teacher"], f"{r['minutes']:g}", pct(r["student_top1"]), pct(r["truth"]),
             *("-" if r[c] is None else signed(r[c] - r["truth"]) for c in candidates)] for r in data["rows"]]
    within = ", ".join(f"{c} {v['within']} of {v['runs']} ({signed(v['lowest_error'])} to {signed(v['highest_error'])})"
                       for c, v in data["summary"].items())
    caption = (f"Agreement with the teacher on the run's real images (truth, %) and each candidate's error "
               f"against it (points): on {data['samples']:,} fresh samples of the run's generator, on those "
               f"the teacher gives at least {data['confident']:g} probability, on {data['samples']:,} "
               f"procedural images. Within {data['within']:g} points of the truth: {within}.  \n"
               + provenance(data, doc, stem))
    return caption + "\n\n" + table(["method", "teacher", "minutes", "student top-1 %", "truth %", *candidates],
                                     body, right_from=2)


def mcu_arena(stem: str, data: dict, doc: Doc) -> str:
    body = [[MODEL_NAMES.get(r["model"], r["model"]), f"{r['planned_bytes']:,}", f"{r['estimated_bytes']:,}",
             f"{r['measured_bytes']:,}", f"{signed(r['error_pct'])} %"] for r in data["rows"]]
    measured = f"Measured with {data['measured_with']}.  \n" if data.get("measured_with") else ""
    return (measured + provenance(data, doc, stem) + "\n\n"
            + table(["model", "planned activations (B)", "estimated arena (B)", "TFLite Micro arena (B)", "error"],
                    body))


# ---------------------------------------------------------------- device estimates against published figures


TABLE_NAMES = {"mlperf_tiny": "MLPerf Tiny", "st_model_zoo": "ST model zoo", "boards": "application-class boards'"}


def validation_sets(data: dict) -> list[tuple[str, dict]]:
    """(name, {runtimes, summary}) of every table of published figures the file validates on."""
    return [(TABLE_NAMES.get(k, k.replace("_", " ")), v) for k, v in data.items()
            if isinstance(v, dict) and "runtimes" in v and "summary" in v]


def error(x) -> float:
    return x[-1] if isinstance(x, list) else x  # a bare error, or [model, board, error]


def errors_cell(values: list) -> str:
    values = [error(v) for v in values]
    if not values:
        return "-"
    if len(values) <= 3:
        return ", ".join(signed(v, 1) for v in values)
    return f"{signed(min(values), 1)} to {signed(max(values), 1)} ({len(values)})"


def held_out(runtime: dict) -> tuple[str, dict]:
    """What a runtime's cross-validation leaves out (model, family...) and its errors by group."""
    key = next(k for k in runtime if k.startswith("leave_one_") and k != "leave_one_board_out")
    return key[len("leave_one_"):-len("_out")], runtime[key]


def summary_groups(summary: dict) -> list[tuple[str, dict]]:
    """A summary is either one set of figures or one per group of cores."""
    if "predictions" in summary:
        return [(summary.get("target_runtimes", ""), summary)]
    return [(name, g) for name, g in summary.items() if isinstance(g, dict) and "predictions" in g]


def device_validation(stem: str, data: dict, doc: Doc) -> str:
    parts = [provenance(data, doc, stem) if "_file" not in data else
             f"`edgekd devices --validate`; the fits edgekd ships, [`{data['_file'].name}`]"
             f"({doc.link(data['_file'].as_posix())}) (no date recorded in the file)"]
    for name, table_ in validation_sets(data):
        runtimes = table_["runtimes"]
        kinds = {held_out(r)[0] for r in runtimes.values()}
        groups = sorted({g for r in runtimes.values() for g in held_out(r)[1]})
        body = [[key, "; ".join(r["fitted_on"]) + (f" (shape from {r['shape_from']})" if r.get("shape_from") else ""),
                 *(errors_cell(held_out(r)[1].get(g, [])) for g in groups),
                 errors_cell([e for errs in r.get("leave_one_board_out", {}).values() for e in errs])]
                for key, r in sorted(runtimes.items())]
        parts.append(f"**{name}**: error % of each estimate, (predicted − published) / published, with the "
                     f"{' or '.join(sorted(kinds))} left out of the fit (a range and count where there are more "
                     "than three):\n\n"
                     + table(["runtime", "fitted on", *groups, "board left out"], body, right_from=2))
        lines = []
        for label, g in summary_groups(table_["summary"]):
            line = (f"- {label + ': ' if label else ''}{g['predictions']} predictions, median absolute error "
                    f"**{g['median_abs_error_pct']} %**, largest **{g['max_abs_error_pct']} %**, "
                    f"{g['within_40_pct']} within 40 %.")
            if g.get("per_op_cycles"):
                line += " Cycles per op fitted on: " + ", ".join(
                    f"{k} {v:,.0f}" for k, v in g["per_op_cycles"].items()) + "."
            if g.get("worst_per_family"):
                line += " Worst of each family: " + "; ".join(
                    f"{fam} {signed(w[-1], 1)} ({', '.join(map(str, w[:-1]))})"
                    for fam, w in g["worst_per_family"].items()) + "."
            lines.append(line)
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def load_device_validation(root: Path, results: dict):
    """Without benchmarks/results/device_validation.json, the MLPerf Tiny fits edgekd ships
    (edgekd/assets, held to the published table by tests/test_mcu.py) say the same."""
    if "device_validation" not in results and (root / FITS).is_file():
        fits = json.loads((root / FITS).read_text())
        results["device_validation"] = {"_file": FITS, "mlperf_tiny": {"runtimes": fits["runtimes"],
                                                                      "summary": fits["summary"]}}


# ---------------------------------------------------------------- the README's headline


def headline(results: dict, doc: Doc) -> str:
    body = []
    for stem in matching("time_to_accuracy_*_vs_real", results):
        data = results[stem]
        reference = [r for r in data["rows"] if "ratio_to_real_data_kd" not in r]
        for r in (r for r in data["rows"] if "ratio_to_real_data_kd" in r):
            ratios = r["ratio_to_real_data_kd"]
            ratio = ratios.get(f"{data['minutes']:g}", list(ratios.values())[-1])
            refs = ", ".join(f"{x['method']} {pct(x['curve'][-1]['top1'])} %" for x in reference)
            threads = data.get("threads")
            each = f", {threads} thread{'s' if threads != 1 else ''} each" if threads else ""
            body.append([f"Data-free student vs KD on real images, side by side: {data['case']}, teacher "
                         f"{data['teacher']} ({pct(data['teacher_top1'])} %) → {data['student']}, "
                         f"{data['minutes']:g} min{each}",
                         f"edgekd ({r.get('resolved_method', r['method'])}) **{pct(r['curve'][-1]['top1'])} %**, "
                         f"{refs}: **{ratio:.2f}x**", f"{doc.file(stem)}, {data.get('date', 'no date')}"])
    if "export_formats" in results:
        data = results["export_formats"]
        rows = [r for r in data["rows"] if r["calibration"] == "synthetic"]
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model]
            fp32 = next(r for r in mine if r["precision"] == "fp32")
            int8 = ", ".join(f"{r['format']} {signed(-r['top1_drop'])}" for r in mine if r["precision"] == "int8")
            body.append([f"int8 top-1 change, calibrated without data: {model}",
                         f"{int8} points (fp32 {pct(fp32['top1'])} %)",
                         f"{doc.file('export_formats')}, {data.get('date', 'no date')}"])
    if "mcu_arena" in results:
        data = results["mcu_arena"]
        errors = [r["error_pct"] for r in data["rows"]]
        body.append([f"Microcontroller RAM (TFLite Micro arena), estimate vs TFLite Micro's own, "
                     f"{len(errors)} models", f"{signed(min(errors))} to {signed(max(errors))} %",
                     f"{doc.file('mcu_arena')}, {data.get('date', 'no date')}"])
    if "device_validation" in results:
        data = results["device_validation"]
        source = (f"{doc.file('device_validation')}, {data.get('date', 'no date')}" if "_file" not in data
                  else f"[`{data['_file'].name}`]({doc.link(data['_file'].as_posix())})")
        for name, table_ in validation_sets(data):
            kinds = " or ".join(sorted({held_out(r)[0] for r in table_["runtimes"].values()}))
            for label, g in summary_groups(table_["summary"]):
                body.append([f"Device latency estimate vs {name} published figures, the {kinds} left out of the "
                             f"fit ({label}: {g['predictions']} predictions)",
                             f"median absolute error {g['median_abs_error_pct']} %, largest "
                             f"{g['max_abs_error_pct']} %", source])
    return table(["measure", "result", "file, date"], body, right_from=3)


# ---------------------------------------------------------------- blocks


def render_files(stems: list[str], results: dict, doc: Doc) -> str:
    parts, seen = [], set()
    for stem in stems:
        if stem in seen:
            continue
        k = kind(stem)
        if k == "throughput":  # runs of one case read best as one table
            group = [s for s in stems if kind(s) == "throughput" and s not in seen]
            seen.update(group)
            parts.append(throughput(group, results, doc))
            continue
        seen.add(stem)
        renderer = {"time_to_accuracy": time_to_accuracy, "export_formats": export_formats,
                    "mcu_arena": mcu_arena, "device_validation": device_validation,
                    "large_inputs": large_inputs, "several_processes": several_processes,
                    "quality_estimates": quality_estimates}.get(k)
        if renderer is None:
            raise ValueError(f"no table for {stem}.json: the generator does not know its kind")
        parts.append(renderer(stem, results[stem], doc))
    return "\n\n".join(parts)


def other_results(placed: set, results: dict, doc: Doc) -> str:
    parts = []
    for stem in (s for s in results if s not in placed):
        try:
            parts.append(render_files([stem], results, doc))
        except (KeyError, TypeError, ValueError, AttributeError):  # a kind not known yet: say what it is
            data = results[stem]
            parts.append(f"- {provenance(data, doc, stem)} (no table yet: docs/generate.py does not know "
                         "this file's fields)")
    return "\n\n".join(parts) if parts else "None: every results file has its table above."


def render(name: str, results: dict, placed: set, doc: Doc) -> str:
    if name == "headline":
        return headline(results, doc)
    if name == "other-results":
        return other_results(placed, results, doc)
    stems = matching(name, results)
    if not stems:
        raise ValueError(f"no results file matches '{name}'")
    return render_files(stems, results, doc)


def regenerate(root: Path = ROOT) -> dict[Path, tuple[str, str]]:
    """{document: (text now, text generated)} for README.md and docs/*.md."""
    results = load_results(root)
    load_device_validation(root, results)
    texts = {path: path.read_text() for path in documents(root) if path.is_file()}
    placed = {stem for text in texts.values() for m in BLOCK.finditer(text) if m["name"] not in SPECIAL
              for stem in matching(m["name"], results)}
    out = {}
    for path, text in texts.items():
        doc = Doc(root, path)

        def fill(m):
            try:
                body = render(m["name"], results, placed, doc)
            except (KeyError, ValueError) as e:
                raise SystemExit(f"{path.relative_to(root)}: block '{m['name']}': {e!r}") from None
            return f"{m.group(1)}{body}\n{m.group(4)}"

        out[path] = (text, BLOCK.sub(fill, text))
    return out


def stale(root: Path = ROOT) -> list[str]:
    """The generated blocks whose text differs from what the results files give."""
    found = []
    for path, (now, generated) in regenerate(root).items():
        old, new = BLOCK.findall(now), BLOCK.findall(generated)
        found += [f"{path.relative_to(root)}: {a[1]}" for a, b in zip(old, new) if a != b]
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when a table differs")
    args = ap.parse_args()
    if args.check:
        differ = stale()
        for block in differ:
            print(f"out of date: {block} (run python docs/generate.py)")
        sys.exit(1 if differ else 0)
    for path, (now, generated) in regenerate().items():
        if generated != now:
            path.write_text(generated)
            print(f"rewrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
