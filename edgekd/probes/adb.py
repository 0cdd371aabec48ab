"""Probe an Android phone over adb with TFLite's benchmark_model, pinned to the big cores."""
import os
import re
import shlex
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


def parse_benchmark_output(text: str) -> dict:
    """The timings of a benchmark_model run, in ms, from either output format. Percentiles are
    kept only when the tool measured them (newer builds print p5 / median / p95); otherwise
    the result has the mean, with std, min and max when printed, and nothing made up."""
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
        count, _, _, low, high, _, std, p5, median, p95 = stats[-1]
        latency.update(min=float(low) / 1e3, max=float(high) / 1e3, std=float(std) / 1e3)
        out["runs"] = int(count)
        if median:
            latency.update(p5=float(p5) / 1e3, p50=float(median) / 1e3, p95=float(p95) / 1e3)
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


def _shell(serial, *words, timeout=60) -> str:
    """`adb shell` runs its arguments through the phone's shell: every word is quoted, so a file
    name stays one argument whatever it contains."""
    return _adb(serial, "shell", " ".join(shlex.quote(str(w)) for w in words), timeout=timeout)


def _push(serial, local, remote: str):
    """adb push, then the copy's sha256 checked on the phone (as the SSH probe's runner does)."""
    _adb(serial, "push", str(local), remote, timeout=120)
    answer = _shell(serial, "sha256sum", remote, timeout=60).split()
    if not answer or answer[0] != sha256(local):
        raise EdgekdError(f"the copy of {Path(local).name} on {serial} does not match the file (sha256 "
                          f"{answer[0] if answer else 'not computed: the phone has no sha256sum'})")


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
    threads = options.threads or connect.get("threads", 4)
    mask = connect.get("big_cores", "f0")
    try:
        _push(serial, path, remote_model)
        _push(serial, binary, remote_tool)
        _shell(serial, "chmod", "755", remote_tool)
        text = _shell(serial, "taskset", mask, remote_tool, f"--graph={remote_model}", f"--num_threads={threads}",
                      f"--num_runs={options.runs}", f"--warmup_runs={options.warmup}", timeout=options.timeout)
    finally:
        _shell(serial, "rm", "-f", "--", remote_model, remote_tool, timeout=30)
    result = {"device": profile["name"], "kind": profile["kind"], "source": "measured", "model": str(path),
              "format": fmt, "model_sha256": sha256(path), "serial": serial, "threads": threads,
              "cpu_mask": mask, "runtime": "benchmark_model"}
    result.update(parse_benchmark_output(text))
    return result
