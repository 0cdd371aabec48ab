"""The `edgekd devices` and `edgekd probe` commands."""
import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import EdgekdError

console = Console()


def _size(n) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--validate", is_flag=True,
              help="fit the latency models on published MLPerf Tiny and ST model zoo results and print "
                   "their cross-validated errors")
@click.option("--published", type=click.Path(exists=True, dir_okay=False),
              help="published_latency.csv [$EDGEKD_DATA/reference-models/mlperf-tiny/]; the four models beside it")
@click.option("--zoo", type=click.Path(exists=True, dir_okay=False),
              help="st_model_zoo_latency.csv [$EDGEKD_DATA/reference-models/st-model-zoo/]; its models/ beside it")
@click.option("--write", is_flag=True, help="with --validate: store the fits edgekd ships (edgekd/assets) and "
                                            "the tables (benchmarks/results/device_validation.json)")
def devices(as_json, validate, published, zoo, write):
    """List the device profiles probe knows (devices/*.yaml)."""
    from ..devices import list_profiles

    if validate:
        return _validate(published, zoo, as_json, write)
    if write or published or zoo:
        raise EdgekdError("--published, --zoo and --write go with --validate")
    profiles = list_profiles()
    if as_json:
        click.echo(json.dumps(profiles))
        return
    table = Table(title="device profiles")
    for col in ("name", "kind", "cpu", "MHz", "cores", "RAM", "flash", "runtimes", "connect"):
        table.add_column(col)
    for p in profiles:
        cpu = p["cpu"]
        runtimes = list(p.get("runtimes", {})) or p.get("runtimes_available", [])
        clock = f"{cpu['clock_hz'] / 1e6:.0f}" if isinstance(cpu.get("clock_hz"), (int, float)) else "-"
        table.add_row(p["name"], p["kind"], str(cpu.get("core")), clock, str(cpu.get("cores")),
                      _size(p.get("ram_bytes")), _size(p.get("flash_bytes")), ", ".join(runtimes),
                      p["connect"]["method"])
    console.print(table)


def _validate(published, zoo, as_json, write):
    import datetime
    from pathlib import Path

    from ..api import data_root
    from ..fileio import write_json
    from .estimate import fit_boards
    from .mcu_latency import FITS, VALIDATION, validate, validate_zoo

    paths = {}
    for name, given, default in (("published_latency.csv", published, "mlperf-tiny/published_latency.csv"),
                                 ("st_model_zoo_latency.csv", zoo, "st-model-zoo/st_model_zoo_latency.csv")):
        paths[name] = Path(given or data_root() / "reference-models" / default)
        if not paths[name].is_file():
            raise EdgekdError(f"{paths[name]} not found: give its path (from ../shared) with --published or --zoo")
    result = {"mlperf_tiny": validate(paths["published_latency.csv"], paths["published_latency.csv"].parent),
              "st_model_zoo": validate_zoo(paths["st_model_zoo_latency.csv"]),
              "boards": fit_boards(paths["published_latency.csv"])}
    if write:
        write_json(FITS, {"source": "published_latency.csv of ../shared/reference-models/mlperf-tiny",
                          "runtimes": result["mlperf_tiny"]["runtimes"], "summary": result["mlperf_tiny"]["summary"],
                          "st_model_zoo": {"source": "st_model_zoo_latency.csv of ../shared/reference-models/st-model-zoo",
                                           **result["st_model_zoo"]}})
        write_json(VALIDATION, {"date": datetime.date.today().isoformat(),
                                "command": "edgekd devices --validate --write", **result})
    if as_json:
        click.echo(json.dumps(result))
        return
    _mlperf_table(result["mlperf_tiny"])
    _zoo_table(result["st_model_zoo"])
    _boards_table(result["boards"])
    if write:
        console.print(f"wrote {FITS} and {VALIDATION}")


def _errors(errs) -> str:
    return ", ".join(f"{e:+.0f}" for e in errs)


def _mlperf_table(result):
    table = Table(title="MLPerf Tiny: error % predicting each network left out of the fit "
                        "(leave-one-model-out) and each board left out (leave-one-board-out)")
    for col in ("core / runtime / version", "ic", "kws", "vww", "ad", "boards out"):
        table.add_column(col, justify="left" if col.startswith("core") else "right")
    for key, r in result["runtimes"].items():
        lomo = r["leave_one_model_out"]
        cells = [_errors(lomo[b]) if b in lomo else "-" for b in ("ic", "kws", "vww", "ad")]
        lobo = "; ".join(f"{board}: {_errors(errs)}" for board, errs in r["leave_one_board_out"].items())
        table.add_row(escape(key), *cells, escape(lobo) or "-")
    console.print(table)
    s = result["summary"]
    console.print(f"{s['target_runtimes']}: {s['predictions']} leave-one-model-out predictions, median |error| "
                  f"{s['median_abs_error_pct']} %, largest {s['max_abs_error_pct']} %, "
                  f"{s['within_40_pct']} within 40 %")


def _zoo_table(result):
    table = Table(title="ST model zoo: error % predicting each architecture family left out of the fit (all its "
                        "widths and resolutions; leave-one-family-out) and each board left out")
    for col in ("core / runtime / version", "family", "left out: error % per network", "boards out"):
        table.add_column(col)
    for key, r in result["runtimes"].items():
        name = key + (f" (cost shape of {r['shape_from']}, scaled)" if r["shape_from"] else "")
        lobo = "; ".join(f"{board}: {_errors(e[-1] for e in errs)}" for board, errs in r["leave_one_board_out"].items())
        for i, (family, errs) in enumerate(r["leave_one_family_out"].items()):
            table.add_row(escape(name) if i == 0 else "", escape(family), _errors(e[-1] for e in errs),
                          escape(lobo) if i == 0 and lobo else "")
    console.print(table)
    for core, s in result["summary"].items():
        if not s:
            continue
        worst = "; ".join(f"{fam} {e[-1]:+.0f} ({e[0]}, {e[1]})" for fam, e in s["worst_per_family"].items())
        console.print(f"{core}: {s['predictions']} leave-one-family-out predictions, median |error| "
                      f"{s['median_abs_error_pct']} %, largest {s['max_abs_error_pct']} %, {s['within_40_pct']} "
                      f"within 40 %; worst per family: " + escape(worst))
    kept_out = result.get("out_of_fit", {})
    for family, why in kept_out.get("why", {}).items():
        errs = "; ".join(f"{key}: {_errors(e[-1] for e in fams[family])}"
                         for key, fams in kept_out["errors"].items() if family in fams)
        console.print(escape(f"{family}, kept out of the fits ({why}), predicted by them: {errs}"))


def _boards_table(result):
    if not result["runtimes"]:
        return
    table = Table(title="Application-class boards (latency_model of their profiles): error % predicting each "
                        "published figure from the others (leave-one-model-out)")
    for col in ("profile / precision", "cost per MAC and per op", "a rate alone", "fitted costs"):
        table.add_column(col)
    for key, r in result["runtimes"].items():
        table.add_row(escape(key), _named_errors(r["leave_one_model_out"]),
                      _named_errors(r["rate_alone_leave_one_model_out"]),
                      f"{r['costs']['gmacs']:g} GMAC/s, {r['costs']['us_per_op']:g} us per op")
    console.print(table)
    s = result["summary"]
    console.print(f"{s['target_runtimes']}: {s['predictions']} leave-one-model-out predictions, median |error| "
                  f"{s['median_abs_error_pct']} % (a rate alone: {s['rate_alone_median_abs_error_pct']} %), "
                  f"largest {s['max_abs_error_pct']} %")


def _named_errors(errors: dict) -> str:
    return ", ".join(f"{escape(name)} {_errors(e)}" for name, e in errors.items())


def _range(text):
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise EdgekdError(f"--input-range takes LOW,HIGH such as 0,1 or 0,255, not '{text}'") from None
    if low != 0 or high not in (1, 255):
        raise EdgekdError("--input-range must be 0,1 or 0,255")
    return high


@click.command()
@click.argument("model", required=False, type=click.Path())
@click.option("--device", "device_name", required=True, help="profile name (see `edgekd devices`) or a .yaml file")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True, help="timed inferences")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True, help="untimed inferences first")
@click.option("--threads", type=click.IntRange(1), help="interpreter threads [the device's cores]")
@click.option("--eval-data", type=click.Path(), help="labelled test data for top-1 on the device")
@click.option("--eval-limit", type=click.IntRange(1), help="use the first N test images")
@click.option("--input-range", help="0,1 or 0,255: the model's input range [from its edgekd metadata, else 0,1]")
@click.option("--runtime", help="microcontroller runtime from the profile (e.g. tflm-cmsis-nn, x-cube-ai-9.0)")
@click.option("--host", help="ssh target: user@address or an ~/.ssh/config alias")
@click.option("--port", type=click.IntRange(1, 65535), help="ssh port")
@click.option("--identity", type=click.Path(), help="ssh private key")
@click.option("--ssh-config", type=click.Path(), help="ssh client config file (ssh -F)")
@click.option("--connect-timeout", type=click.FloatRange(min=1), default=10, show_default=True, help="seconds")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="seconds for the whole run on the device")
@click.option("--serial", help="adb device serial [$ANDROID_SERIAL]")
@click.option("--benchmark-binary", type=click.Path(), help="TFLite benchmark_model built for the phone")
@click.option("--no-save", is_flag=True, help="do not write <model dir>/probes/<model>.<device>.json")
def probe(model, device_name, as_json, runs, warmup, threads, eval_data, eval_limit, input_range, runtime, host,
          port, identity, ssh_config, connect_timeout, timeout, serial, benchmark_binary, no_save):
    """Latency, memory and accuracy of MODEL (.tflite or .onnx; the latest run's int8 TFLite file
    when omitted) on a device: measured when the device is reachable (this machine, ssh, adb),
    estimated for microcontrollers or otherwise."""
    from .. import api

    result = api.probe(model, device=device_name, runs=runs, warmup=warmup, threads=threads, eval_data=eval_data,
                       eval_limit=eval_limit, input_range=_range(input_range), runtime=runtime, host=host, port=port,
                       identity=identity, ssh_config=ssh_config, connect_timeout=connect_timeout, timeout=timeout,
                       serial=serial, benchmark_binary=benchmark_binary, save=not no_save,
                       log=(lambda msg: None) if as_json else console.print)
    if as_json:
        click.echo(json.dumps(result))
    else:
        show(result)


def show(result: dict):
    from . import latency_text

    if result.get("layers"):
        table = Table(title=f"{result['model']} on {result['device']} ({result['runtime']}, estimated)")
        for col in ("#", "op", "v", "precision", "output", "MMACs", "ms", "TFLM"):
            table.add_column(col, justify="right" if col in ("#", "v", "MMACs", "ms") else "left")
        for layer in result["layers"]:
            table.add_row(str(layer["index"]), layer["op"], str(layer["version"]), layer["precision"],
                          "x".join(map(str, layer["output_shape"])), f"{layer['macs'] / 1e6:.3f}",
                          f"{layer['ms']:.2f}", "ok" if layer["supported"] else "[red]missing[/red]")
        console.print(table)
    summary = Table(show_header=False, title=f"probe: {result['device']} ({result['source']})")
    lat = result["latency_ms"]
    summary.add_row("latency", latency_text(lat))
    for name, ms in lat.get("by_runtime", {}).items():
        summary.add_row(f"  {name}", f"{ms:.2f} ms  " + escape(f"[{result['calibration'][name]}]"))
    for key, label in (("init_ms", "init"), ("first_ms", "first inference")):
        if result.get(key) is not None:
            summary.add_row(label, f"{result[key]:.2f} ms")
    if result.get("top1") is not None:
        summary.add_row("top-1", f"{result['top1']:.2f} % on {result['eval_samples']} images")
    if result.get("ram_bytes") is not None:
        budget = f" of {_size(result['ram_budget_bytes'])}" if result.get("ram_budget_bytes") else ""
        # Whose memory plan the arena is: TFLite Micro's, an upper bound for ST's runtimes.
        arena = (f" (arena {_size(result['arena_bytes'])}, {result['arena_source']}, "
                 f"{result['arena_runtime']})" if "arena_source" in result else "")
        summary.add_row("RAM", _size(result["ram_bytes"]) + budget + arena)
    if result.get("flash_bytes") is not None:
        budget = f" of {_size(result['flash_budget_bytes'])}" if result.get("flash_budget_bytes") else ""
        summary.add_row("flash", _size(result["flash_bytes"]) + budget)
    if "fits" in result:
        summary.add_row("fits", "unknown (the profile gives no RAM or flash size)" if result["fits"] is None
                        else "[green]yes[/green]" if result["fits"] else "[red]no[/red]")
    for op in result.get("unsupported_ops", []):
        summary.add_row("unsupported", escape(f"#{op['index']} {op['op']}: {op['reason']}"))
    for warning in result.get("int8_warnings", []):
        summary.add_row("int8", warning)
    for key in ("runtime", "threads", "note", "calibration"):
        if key in result and not isinstance(result[key], dict) and "layers" not in result:
            summary.add_row(key, escape(str(result[key])))
    console.print(summary)
