"""`edgekd probe`: latency, memory and accuracy of a .tflite / .onnx model on a device.

One backend per way of reaching a device, chosen by the profile's `connect.method`:
local (this machine), ssh (Linux boards), adb (phones) and none (microcontrollers: estimated from
the file). A backend returns a dict with at least device, source and latency_ms.
"""
import io
import json
import os
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgekdError
from ..fileio import sha256, write_json

RUNNER = Path(__file__).with_name("runner.py")
FORMATS = {".tflite": "tflite", ".onnx": "onnx"}
CHUNK = 256  # images per chunk streamed to the runner: bounded memory on small boards


@dataclass
class ProbeOptions:
    runs: int = 50
    warmup: int = 5
    threads: int | None = None
    eval_data: str | None = None
    eval_limit: int | None = None
    input_range: float | None = None   # 1 or 255; None: the model's metadata, else 1
    runtime: str | None = None         # MCU runtime from the profile
    host: str | None = None            # ssh
    port: int | None = None
    identity: str | None = None
    ssh_config: str | None = None
    connect_timeout: float = 10
    timeout: float = 600             # whole run on the device
    serial: str | None = None          # adb
    benchmark_binary: str | None = None


def model_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EdgekdError(f"{path.name}: probe takes .tflite or .onnx files")
    if not path.is_file():
        raise EdgekdError(f"model {path} not found")
    return fmt


def input_range(path: Path, given: float | None) -> float:
    """The top of the model's input range: given, else the "edgekd" metadata an export stores
    ({"preprocessing": {"range": [0, 255]}}), else 1 (inputs in [0, 1])."""
    if given is not None:
        return given
    if path.suffix == ".tflite":
        from .tflite import read_tflite
        meta = read_tflite(path).edgekd_metadata()
    else:
        from ..exporter.onnx_format import read_metadata
        meta = read_metadata(path)
    top = (meta.get("preprocessing") or {}).get("range", [0, 1])[1]
    return float(top)


def eval_chunks(path, limit):
    """The test split as uint8 NCHW chunks (pixels are stored as bytes in every format edgekd
    reads, so x * 255 rounds back exactly) and the labels."""
    from ..data import load_dataset

    ds = load_dataset(path, "test", limit)
    pixels = np.round(np.asarray(ds.x) * 255).astype(np.uint8)
    return [pixels[i:i + CHUNK] for i in range(0, len(pixels), CHUNK)], np.asarray(ds.y)


def runner_args(model_arg, options: ProbeOptions, value_range, digest=None) -> list:
    args = [model_arg, "--runs", str(options.runs), "--warmup", str(options.warmup),
            "--threads", str(options.threads or 1), "--input-range", str(value_range)]
    if digest:
        args += ["--sha256", digest]
    return args + (["--eval"] if options.eval_data else [])


def stream_runner(command: list, chunks, labels, timeout: float, describe_failure) -> dict:
    """Run the runner command with the image chunks on its stdin (length-prefixed .npy blocks,
    then a zero length), read its JSON lines, and add top-1 when images were sent.
    communicate() writes and reads all three pipes together, so neither side can block the
    other on a full pipe."""
    feed = io.BytesIO()
    for chunk in chunks or []:
        block = io.BytesIO()
        np.save(block, chunk, allow_pickle=False)
        feed.write(struct.pack(">I", block.tell()) + block.getvalue())
    feed.write(struct.pack(">I", 0))
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(feed.getvalue(), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise EdgekdError(f"the probe did not finish within {timeout:.0f} s (raise --timeout for big models or data)")
    lines, stderr = stdout.decode(errors="replace").splitlines(), stderr.decode(errors="replace")
    objects = []
    for line in lines:
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not objects:
        raise EdgekdError(describe_failure(proc.returncode, stderr))
    result = objects[-1]
    if "error" in result:
        raise EdgekdError(result["error"])
    predictions = [p for o in objects[:-1] for p in o.get("pred", [])]
    if chunks is not None:
        if len(predictions) != len(labels):
            raise EdgekdError(f"the device returned {len(predictions)} predictions for {len(labels)} images")
        result["top1"] = round(float(np.mean(np.array(predictions) == labels) * 100), 2)
        result["eval_samples"] = len(labels)
    return result


def latency_text(lat: dict) -> str:
    """One line for any latency result: estimated, measured percentiles, or a mean (and std) only."""
    if "estimate" in lat:
        spread = f", {lat['low']:.2f} to {lat['high']:.2f} by its cross-validated error" if "low" in lat else ""
        return f"~{lat['estimate']:.2f} ms (estimated{spread})"
    percentiles = [f"{k} {lat[k]:.3f}" for k in ("p50", "p90", "p95", "p99") if k in lat]
    if percentiles:
        return ", ".join(percentiles) + " ms"
    return f"mean {lat['mean']:.3f}" + (f" ± {lat['std']:.3f}" if "std" in lat else "") + " ms"


def measured(profile, path, fmt, run: dict, value_range, **extra) -> dict:
    out = {"device": profile["name"], "kind": profile["kind"], "source": "measured", "model": str(path),
           "format": fmt, "model_sha256": sha256(path), "input_range": [0, value_range]}
    out.update(extra)
    out.update(run)
    out["ram_bytes"] = run.get("peak_rss_bytes")
    return out


def probe(model, profile: dict, options: ProbeOptions) -> dict:
    from . import adb, host, mcu, ssh
    from .estimate import estimate_rate

    path = Path(model)
    fmt = model_format(path)
    method = profile["connect"]["method"]
    if method == "none":
        if fmt != "tflite":
            raise EdgekdError(f"{profile['name']} is a microcontroller: give the int8 .tflite (TFLite Micro runs no ONNX)")
        return mcu.estimate(path, profile, options.runtime)
    backends = {"local": host.probe, "ssh": ssh.probe, "adb": adb.probe}
    if method not in backends:
        raise EdgekdError(f"profile {profile['name']}: unknown connect method '{method}'")
    reachable = {"local": True, "ssh": bool(options.host or profile["connect"].get("host")),
                 "adb": bool(options.serial or profile["connect"].get("serial") or os.environ.get("ANDROID_SERIAL"))}[method]
    if not reachable:  # no device given: the profile's documented rate model instead
        return estimate_rate(path, fmt, profile, method)
    return backends[method](path, fmt, profile, options)


def probe_path(model, device: str) -> Path:
    """<model dir>/probes/<model file name>.<device>.json. The device name comes from a profile,
    which may be any user's YAML file: it is reduced to a plain file name so the result cannot
    land outside the probes folder."""
    model = Path(model)
    device = re.sub(r"[^A-Za-z0-9._-]", "_", str(device)).lstrip(".") or "device"
    return model.parent / "probes" / f"{model.name}.{device}.json"


def save_probe(result: dict) -> Path:
    """Writes a probe result where probe_path() says, atomically."""
    out = probe_path(result["model"], result["device"])
    write_json(out, result)
    return out

