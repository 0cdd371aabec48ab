"""Probe an Android phone over adb with TFLite's benchmark_model, pinned to the big cores."""
import os
import re
import subprocess
from pathlib import Path

from ..errors import EdgekdError
from ..fileio import sha256

NUMBER = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
# Newer tool: "Inference timings in us: Init: 34939, First inference: 130492, Warmup (avg): 116523,
# Inference (avg): 112533". Older tool: "Average inference timings in us: Warmup: 146161,
# Init: 4452, no stats: 137722" (or "Inference: 80660.1" in the Android app's log).
NEW = re.compile(rf"Inference timings in us: Init: {NUMBER}, First inference: {NUMBER}, "
                 rf"Warmup \(avg\): {NUMBER}, Inference \(avg\): {NUMBER}")
OLD = re.compile(rf"Average inference timings in us: Warmup: {NUMBER}, Init: {NUMBER}, "
                 rf"(?:no stats|Inference): {NUMBER}")
# Per-run statistics of the timed runs (the last "count=" line; the first one is the warm-up).
STATS = re.compile(rf"count=(\d+) first={NUMBER} curr={NUMBER} min={NUMBER} max={NUMBER} avg={NUMBER} "
                   rf"std={NUMBER}(?: p5={NUMBER} median={NUMBER} p95={NUMBER})?")
MEMORY = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                    rf"init={NUMBER} overall={NUMBER}")
Z90, Z99 = 1.2816, 2.3263  # normal quantiles for p90 / p99 when the tool prints no percentiles


def parse_benchmark_output(text: str) -> dict:
    """The timings of a benchmark_model run, in ms, from either output format."""
    out = {}
    if m := NEW.search(text):
        init, first, warmup, avg = map(float, m.groups())
    elif m := OLD.search(text):
        warmup, init, avg = map(float, m.groups())
        first = None
    else:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        raise EdgekdError(f"benchmark_model printed no inference timings; its last line: {lines[-1] if lines else '(none)'}")
    out.update(init_ms=init / 1e3, warmup_ms=warmup / 1e3, first_ms=first / 1e3 if first else None)
    latency = {"mean": round(avg / 1e3, 4)}
    stats = STATS.findall(text)
    if stats:
        count, _, _, low, high, mean, std, _, median, p95 = stats[-1]
        latency.update(min=float(low) / 1e3, max=float(high) / 1e3, std=float(std) / 1e3)
        out["runs"] = int(count)
        mean, std, high = float(mean), float(std), float(high)
        # benchmark_model prints mean and std (newer builds also p5/median/p95), not p90/p99:
        # those are mean + z * std, capped at the slowest run, and labelled as such.
        latency["p50"] = round((float(median) if median else mean) / 1e3, 4)
        latency["p90"] = round(min(mean + Z90 * std, high) / 1e3, 4)
        latency["p99"] = round(min(mean + Z99 * std, high) / 1e3, 4)
        if p95:
            latency["p95"] = round(float(p95) / 1e3, 4)
        out["percentiles"] = ("p50 is the median" if median else "p50 is the mean") + \
            "; p90/p99 are mean + z*std (normal approximation), capped at the max"
    out["latency_ms"] = latency
    if m := MEMORY.search(text):
        out["memory_mb"] = {"init": float(m.group(1)), "overall": float(m.group(2))}
        out["ram_bytes"] = int(float(m.group(2)) * 2**20)
    return out


def _adb(serial, *args, timeout=60) -> str:
    try:
        done = subprocess.run(["adb", "-s", serial, *args], capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise EdgekdError("adb was not found: install Android platform-tools and put adb on PATH") from None
    except subprocess.TimeoutExpired:
        raise EdgekdError(f"adb {args[0]} on {serial} did not finish within {timeout} s") from None
    text = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode != 0:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        raise EdgekdError(f"adb {args[0]} on {serial} failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    return text


def probe(path, fmt, profile, options):
    if fmt != "tflite":
        raise EdgekdError("phones are probed with TFLite's benchmark_model: give a .tflite file")
    connect = profile["connect"]
    serial = options.serial or connect.get("serial") or os.environ.get("ANDROID_SERIAL")
    binary = options.benchmark_binary or connect.get("benchmark_binary")
    if not binary or not Path(binary).is_file():
        raise EdgekdError("give --benchmark-binary: TFLite's android_aarch64 benchmark_model "
                          "(download the nightly build or bazel build //tensorflow/lite/tools/benchmark:benchmark_model)")
    if options.eval_data:
        raise EdgekdError("--eval-data is not available over adb (benchmark_model measures speed only)")
    remote_dir = connect.get("remote_dir", "/data/local/tmp")
    remote_model, remote_tool = f"{remote_dir}/{path.name}", f"{remote_dir}/edgekd_benchmark_model"
    _adb(serial, "push", str(path), remote_model, timeout=120)
    _adb(serial, "push", binary, remote_tool, timeout=120)
    try:
        threads = options.threads or connect.get("threads", 4)
        mask = connect.get("big_cores", "f0")
        text = _adb(serial, "shell", f"chmod 755 {remote_tool} && taskset {mask} {remote_tool} "
                    f"--graph={remote_model} --num_threads={threads} --num_runs={options.runs} "
                    f"--warmup_runs={options.warmup}", timeout=options.timeout)
    finally:
        _adb(serial, "shell", f"rm -f {remote_model} {remote_tool}", timeout=30)
    result = {"device": profile["name"], "kind": profile["kind"], "source": "measured", "model": str(path),
              "format": fmt, "model_sha256": sha256(path), "serial": serial, "threads": threads,
              "cpu_mask": mask, "runtime": "benchmark_model"}
    result.update(parse_benchmark_output(text))
    return result

