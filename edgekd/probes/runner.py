"""Self-contained model runner: copied to a device (or run locally) to time a .tflite or .onnx model
and, optionally, classify images streamed on stdin.

Only the standard library, numpy and whichever interpreter the device has. Prints one JSON object
per line: a {"pred": [...]} line per image chunk, then the result (or {"error": ...}) last.

Image chunks on stdin: a 4-byte big-endian length, then that many bytes of an .npy uint8 array
(N, C, H, W) of 0-255 pixels; a zero length ends the stream.
"""
import argparse
import hashlib
import io
import json
import os
import resource
import struct
import sys
import time

try:
    import numpy as np
except ImportError:  # say what to install instead of a traceback
    print(json.dumps({"error": "numpy is missing on the device: pip install numpy (or apt install python3-numpy)"}))
    sys.exit(3)

PIP_HINT = {"tflite": "pip install ai-edge-litert  (or, on Python <= 3.11 with numpy 1.x: pip install tflite-runtime)",
            "onnx": "pip install onnxruntime"}


class RunnerError(Exception):
    pass


def rss_bytes() -> int:
    """Peak resident memory of this process so far. Linux's VmHWM belongs to this program alone;
    ru_maxrss (the fallback, KiB on Linux, bytes on macOS) can carry the parent's peak over exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class TFLiteModel:
    def __init__(self, path, threads):
        interpreter = None
        for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"):
            try:
                interpreter = __import__(module, fromlist=["Interpreter"]).Interpreter
                self.runtime = module.split(".")[0]
                break
            except ImportError:
                continue
        if interpreter is None:
            raise RunnerError(f"no TFLite interpreter on this device: {PIP_HINT['tflite']}")
        self.interpreter = interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.shape, self.dtype = list(self.input["shape"]), np.dtype(self.input["dtype"])
        scale, zero = self.input.get("quantization", (0.0, 0))
        self.quant = (scale, zero) if scale else None

    def __call__(self, x):
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])


class OnnxModel:
    def __init__(self, path, threads):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerError(f"no ONNX runtime on this device: {PIP_HINT['onnx']}") from None
        self.runtime = "onnxruntime"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.name = inp.name
        self.shape = [d if isinstance(d, int) else 1 for d in inp.shape]  # symbolic batch -> 1
        types = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
        self.dtype, self.quant = np.dtype(types.get(inp.type, np.float32)), None

    def __call__(self, x):
        return self.session.run(None, {self.name: x})[0]


def to_input(pixels, model, value_range):
    """uint8 NCHW pixels -> one model input: layout from the input shape, values scaled to the
    model's range ([0, 1] or [0, 255]), then quantized with the input tensor's own parameters."""
    x = pixels.astype(np.float32) * (value_range / 255.0)
    channels = x.shape[1]
    if len(model.shape) == 4 and model.shape[3] == channels and model.shape[1] != channels:
        x = x.transpose(0, 2, 3, 1)  # the model wants NHWC
    if model.quant:
        scale, zero = model.quant
        info = np.iinfo(model.dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    return x.astype(model.dtype)


def random_input(model, value_range):
    """A timing input of the right shape and type (latency does not depend on the values)."""
    rng = np.random.default_rng(0)
    if model.dtype.kind == "f":
        return (rng.random(model.shape) * value_range).astype(model.dtype)
    info = np.iinfo(model.dtype)
    return rng.integers(info.min, info.max, model.shape, endpoint=True).astype(model.dtype)


def load_model(path: str, threads: int):
    return (OnnxModel if path.endswith(".onnx") else TFLiteModel)(path, threads)


def time_inference(model, x, warmup: int, runs: int) -> dict:
    """The one latency harness (`edgekd probe` on every device, and `edgekd export`'s check on
    this machine): the first call timed alone (it allocates and packs weights), `warmup` untimed
    calls, then percentiles and the mean of `runs` timed calls, in ms."""
    start = time.perf_counter()
    model(x)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1e3)
    times = np.array(times)
    percentiles = {k: round(float(np.percentile(times, q)), 4) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))}
    return {"first_ms": round(first_ms, 3), "latency_ms": percentiles | {"mean": round(float(times.mean()), 4)}}


def read_chunks(stream):
    while True:
        header = stream.read(4)
        if len(header) < 4:
            return
        (size,) = struct.unpack(">I", header)
        if size == 0:
            return
        yield np.load(io.BytesIO(stream.read(size)), allow_pickle=False)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--input-range", type=float, default=1.0, help="1 for [0,1] inputs, 255 for [0,255]")
    p.add_argument("--sha256", help="expected sha256 of the model (checks the copy)")
    p.add_argument("--eval", action="store_true", help="classify image chunks read from stdin")
    args = p.parse_args(argv)
    try:
        if args.sha256:
            with open(args.model, "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != args.sha256:
                    raise RunnerError("the model copied to the device differs from the original (sha256 mismatch)")
        rss_before = rss_bytes()
        start = time.perf_counter()
        model = load_model(args.model, args.threads)
        init_ms = (time.perf_counter() - start) * 1e3
        timing = time_inference(model, random_input(model, args.input_range), args.warmup, args.runs)
        predictions = 0
        if args.eval:
            stdin = sys.stdin.buffer
            for chunk in read_chunks(stdin):
                pred = [int(np.argmax(model(to_input(chunk[i:i + 1], model, args.input_range))))
                        for i in range(len(chunk))]
                predictions += len(pred)
                print(json.dumps({"pred": pred}), flush=True)
        result = {
            "runtime": model.runtime, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
            "init_ms": round(init_ms, 3), **timing,
            "peak_rss_bytes": rss_bytes(), "rss_before_model_bytes": rss_before,
            "input": {"shape": [int(d) for d in model.shape], "dtype": model.dtype.name,
                      "quantization": list(model.quant) if model.quant else None},
            "predictions": predictions, "python": sys.version.split()[0], "machine": os.uname().machine,
        }
        print(json.dumps(result), flush=True)
        return 0
    except RunnerError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 3
    except Exception as e:  # noqa: BLE001 - report any interpreter failure as one JSON line
        print(json.dumps({"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}),
              flush=True)
        return 4


if __name__ == "__main__":
    sys.exit(main())
