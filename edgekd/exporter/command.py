"""The `edgekd export` click command: parse, hand to api.export, print the table."""
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

# Piped output (logs, CI) gets a wide table rather than file names cut to a few letters.
console = Console(width=None if sys.stdout.isatty() else 160)


@click.command()
@click.argument("source", required=False, type=click.Path())
@click.option("--onnx", "want_onnx", is_flag=True, help="write ONNX files")
@click.option("--tflite", "want_tflite", is_flag=True, help="write TFLite files (needs litert-torch)")
@click.option("--fp16", is_flag=True, help="TFLite with float16 weights")
@click.option("--int8", is_flag=True, help="full-integer int8, calibrated (the default with fp32)")
@click.option("--dynamic", is_flag=True, help="dynamic-range int8 (int8 weights, float activations)")
@click.option("--calib", default="synthetic", show_default=True, metavar="synthetic|PATH",
              help="calibration samples: synthetic (the run's generator, or synthesized from the "
                   "model's BatchNorm statistics) or real images at PATH")
@click.option("--calib-size", type=click.IntRange(2), default=256, show_default=True)
@click.option("--nhwc", is_flag=True, help="channel-last input (N,H,W,C)")
@click.option("--int8-io", is_flag=True, help="TFLite int8 input and output tensors (input: pixel - 128)")
@click.option("--per-tensor", is_flag=True, help="ONNX int8 weights per tensor instead of per channel")
@click.option("--eval-data", type=click.Path(), help="real labelled data to check top-1 on")
@click.option("--out", type=click.Path(), help="output directory [RUN/export or <model>_export]")
@click.option("--force", is_flag=True, help="replace an existing output directory")
@click.option("--teacher-arch", help="zoo architecture of a plain state_dict SOURCE (e.g. resnet20)")
@click.option("--input-shape", help="C,H,W when the model file does not say")
@click.option("--mean", help="normalisation mean per channel to fold in (default: what the model records)")
@click.option("--std", help="normalisation std per channel")
@click.option("--trust-pickle", is_flag=True, help="allow loading a pickled module (runs code from the file)")
@click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N",
              help="where to synthesize calibration samples [auto]; converters run on the CPU")
@click.option("--no-progress", is_flag=True, help="plain log lines")
def export(source, want_onnx, want_tflite, fp16, int8, dynamic, calib, calib_size, nhwc, int8_io, per_tensor,
           eval_data, out, force, teacher_arch, input_shape, mean, std, trust_pickle, device, no_progress):
    """Export SOURCE (a run directory or a .pt2 / TorchScript / state_dict model; the latest run
    under ./runs when omitted) to ONNX and TFLite, float and int8, calibrated without data and
    checked against the float model.

    Without --onnx/--tflite: every format whose packages are installed. Without --fp16/--int8/--dynamic:
    fp32 and int8. The fp32 file of each format is always written (the reference)."""
    from .. import api

    log = console.print if not no_progress else (lambda msg: click.echo(msg))
    formats = [name for name, wanted in (("onnx", want_onnx), ("tflite", want_tflite)) if wanted] or None
    precisions = [p for p, wanted in (("fp16", fp16), ("int8", int8), ("dynamic-int8", dynamic)) if wanted]
    _show(api.export(source, formats=formats, precisions=precisions, nhwc=nhwc, int8_io=int8_io,
                     per_tensor=per_tensor, calib=calib, calib_size=calib_size, eval_data=eval_data, out=out,
                     force=force, teacher_arch=teacher_arch, input_shape=input_shape, mean=mean, std=std,
                     trust_pickle=trust_pickle, device=device, log=log)["artifacts"])


def _show(results):
    table = Table(title=f"exported to {Path(results[0]['path']).parent} (details in export.json)")
    for col in ("file", "size KB", "x fp32", "agree synth %", "agree data %", "top-1 %", "ms", "max |diff|", "ops"):
        table.add_column(col, justify="left" if col in ("file", "ops") else "right")
    fp32 = {r["format"]: r["size_bytes"] for r in results if r["precision"] == "fp32"}
    has_data = results and results[0]["top1"] is not None
    for r in results:
        table.add_row(Path(r["path"]).name, f"{r['size_bytes'] / 1024:.1f}", f"{r['size_bytes'] / fp32[r['format']]:.2f}",
                      f"{r['agreement_synthetic']:.2f}", f"{r['agreement']:.2f}" if has_data else "-",
                      f"{r['top1']:.2f}" if has_data else "-", f"{r['latency_ms']:.2f}",
                      f"{r['max_abs_diff']:.2g}", str(len(r["ops"])))
    console.print(table)
