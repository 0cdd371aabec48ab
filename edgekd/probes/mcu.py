"""Microcontroller estimate from the .tflite alone: TFLite Micro op support, flash, RAM and latency.

Nothing here runs the model on a board: latency, flash and op support come from the file and the
device profile, and every result says `source: estimated`. The arena is the one exception when
the `tflite-micro` package is installed: TFLite Micro's own interpreter then allocates the model
on this host and its figure is reported (`arena_source`), the analytical one kept beside it.
"""
import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

from ..errors import EdgekdError
from .mcu_latency import latency_range, op_cycles, runtime_model
from .tflite import op_macs, op_precision, read_tflite

# Builtin ops with a TFLite Micro kernel (tensorflow/lite/micro/micro_mutable_op_resolver.h, the
# Add<Op>() methods). TFLM resolves kernels by builtin code only and never checks the op version;
# what a newer version adds is a tensor type or an option, which the type checks below cover.
TFLM_OPS = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE
DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV
FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION
L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX
MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE
READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT
SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE
TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())
# Tensor types TFLM kernels handle at all (no float16, float64 or int64 arithmetic on MCUs).
TFLM_TYPES = frozenset({"FLOAT32", "INT8", "UINT8", "INT16", "INT32", "BOOL", "INT4"})
# Ops whose int8 kernels CMSIS-NN accelerates need symmetric int8 weights (zero point 0).
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
ALIGN = 16  # TFLM aligns every arena buffer to 16 bytes (kBufferAlignment)
# The arena's tail (allocations that live as long as the interpreter), per item, as TFLite Micro's
# RecordingMicroAllocator reports them for the four MLPerf Tiny models on a 64-bit host (the
# `tflite-micro` package): a TfLiteEvalTensor per tensor; a node and its registration per op;
# a TfLiteTensor and its quantization data for each graph input and output; kernel OpData per op,
# plus a multiplier and a shift (int32 each) per output channel of quantized convolutions (and of
# fully connected layers quantized per channel); and TFLM's own bookkeeping, a fixed part and a
# pointer-sized slot per tensor. A 32-bit MCU's structures hold 4-byte pointers, so there the
# tail is somewhat smaller: an upper bound.
TAIL_BYTES = {"eval_tensor": 24, "node": 64, "io_tensor": 64 + 32, "op_data": 80, "per_channel": 8,
              "per_tensor": 8, "fixed": 512}
PER_CHANNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")
# Which runtime the RAM figure is for, whatever runtime the latency is for: X-CUBE-AI and STEdgeAI
# plan their activations themselves, in less (ST's published activation RAM of its five audio
# models, on the B-U585I-IOT02A and NUCLEO-U3C5ZI-Q, is 1.16 to 1.83 times less than the planned
# TFLite Micro activations of the same files), so for them the figure is an upper bound.
ARENA_RUNTIME = "TensorFlow Lite Micro (an upper bound for X-CUBE-AI / STEdgeAI)"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def check_op(model, op) -> list:
    """Reasons this op cannot run under TFLite Micro (empty when it can)."""
    if op.name.startswith("CUSTOM:"):
        return [f"custom op {op.name[7:]} has no TFLM kernel"]
    if op.name not in TFLM_OPS:
        return [f"{op.name} has no TFLM kernel (init fails: \"Didn't find op for builtin opcode\")"]
    bad = sorted({model.tensors[i].dtype for i in op.inputs + op.outputs if i >= 0} - TFLM_TYPES)
    return [f"{op.name} uses {', '.join(bad)} tensors, which TFLM kernels do not handle"] if bad else []


def int8_issues(model, op) -> list:
    """Why an op would miss the int8 (CMSIS-NN) kernels: float math or asymmetric weights."""
    if op.name in ("QUANTIZE", "DEQUANTIZE"):
        return []
    if op_precision(model, op) == "float32":
        return [f"{op.name} runs in float32 (reference kernels only, no CMSIS-NN)"]
    if op.name in WEIGHTED_OPS and len(op.inputs) > 1:
        w = model.tensors[op.inputs[1]]
        if w.dtype == "INT8" and any(z != 0 for z in w.zero_point):
            return [f"{op.name} weights are int8 with a non-zero zero point (CMSIS-NN needs symmetric)"]
    return []


def lifetimes(model, scratch: dict) -> list:
    """(size, first op, last op) of every buffer the arena must hold, in the order TFLM adds them
    to its planner (tensor index, then per-op scratch buffers): activations, graph inputs (from
    the start) and outputs (to the end)."""
    n = len(model.ops)
    first, last = {}, {}
    for i in model.inputs:
        first[i] = 0
    for op in model.ops:
        for i in op.outputs:
            first.setdefault(i, op.index)
        for i in op.inputs:
            if i >= 0 and not model.tensors[i].constant:
                last[i] = op.index
    for i in model.outputs:
        last[i] = n - 1
    buffers = [(model.tensors[i].nbytes, first[i], last.get(i, first[i])) for i in sorted(first)]
    buffers += [(size, index, index) for index, size in scratch.items() if size > 0]
    return buffers


def greedy_arena(buffers) -> int:
    """Arena bytes from TFLM's GreedyMemoryPlanner: largest buffer first, each at the lowest
    offset that does not overlap a placed buffer alive at the same time. Buffers of equal size
    go in reverse order of addition, as in TFLM, which fills its sort array from the tail before
    a stable sort (on the MLPerf visual wake words model the other order plans 64,512 bytes where
    TFLM plans 73,728)."""
    placed = []
    for size, start, end in sorted(reversed(buffers), key=lambda b: -b[0]):
        size = _align(size)
        offset = 0
        for o, s, a, b in sorted((p for p in placed if not (p[3] < start or p[2] > end)), key=lambda p: p[0]):
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, start, end))
    return max((o + s for o, s, _, _ in placed), default=0)


def cmsis_scratch(model, op) -> int:
    """Scratch bytes CMSIS-NN asks for (the int16 im2col buffer of arm_convolve_s8 and the
    depthwise equivalent); 1x1 convolutions and 3x3 depthwise fast paths need none."""
    if op.name == "CONV_2D":
        _, kh, kw, cin = model.tensors[op.inputs[1]].shape
        return 0 if kh == kw == 1 else 2 * cin * kh * kw * 2
    if op.name == "DEPTHWISE_CONV_2D":
        _, kh, kw, cout = model.tensors[op.inputs[1]].shape
        return 0 if kh == kw == 3 else cout * kh * kw * 2
    return 0


def persistent_bytes(model) -> int:
    """The arena's tail (TAIL_BYTES)."""
    t = TAIL_BYTES
    channels = sum(model.tensors[op.outputs[0]].shape[-1] for op in model.ops if _per_channel_data(model, op))
    return _align(len(model.tensors) * (t["eval_tensor"] + t["per_tensor"]) + len(model.ops) * (t["node"] + t["op_data"])
                  + (len(model.inputs) + len(model.outputs)) * t["io_tensor"] + channels * t["per_channel"] + t["fixed"])


@contextlib.contextmanager
def _captured_stderr():
    """What C code writes to file descriptor 2 inside the block, in the yielded list once it ends."""
    sys.stderr.flush()
    captured = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _per_channel_data(model, op) -> bool:
    """Whether TFLM keeps a multiplier and shift per output channel for this op: quantized
    convolutions always, fully connected layers when their weights are quantized per channel."""
    if op_precision(model, op) == "float32":
        return False
    if op.name == "FULLY_CONNECTED":
        return len(model.tensors[op.inputs[1]].scale) > 1
    return op.name in PER_CHANNEL_OPS


def measured_arena(path) -> int | None:
    """Arena bytes TFLite Micro's own interpreter allocates for the model on this host (the
    `tflite-micro` package, reference kernels, RecordingMicroAllocator), or None when that
    package is not installed. Raises EdgekdError when TFLM cannot initialise the model, as on a
    board (an op without a kernel)."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return None
    size = Path(path).stat().st_size
    with _captured_stderr() as log:  # TFLM's MicroPrintf writes there
        try:
            interpreter = runtime.Interpreter.from_file(str(path), arena_size=max(16 << 20, 20 * size))
            interpreter.print_allocations()
        except (RuntimeError, ValueError) as e:
            failure = e
        else:
            failure = None
    if failure is not None:
        detail = next((line for line in log[0].splitlines() if "Didn't find op" in line or "Failed" in line), "")
        raise EdgekdError(f"TFLite Micro cannot initialise {Path(path).name}: {detail.strip() or _first_line(failure)}")
    match = re.search(r"Arena allocation total (\d+) bytes", log[0])
    return int(match.group(1)) if match else None


def estimate(model_path, profile: dict, runtime_name: str | None = None) -> dict:
    model = read_tflite(model_path)
    runtimes = profile["runtimes"]
    runtime_name = runtime_name or profile["default_runtime"]
    if runtime_name not in runtimes:
        raise EdgekdError(f"runtime {runtime_name} is not in the {profile['name']} profile "
                          f"(it has {', '.join(runtimes)})")
    if model.subgraphs > 1:
        raise EdgekdError(f"{model.path.name} has {model.subgraphs} subgraphs; the MCU estimate handles one")
    clock = profile["cpu"]["clock_hz"]
    models = {name: runtime_model(r) for name, r in runtimes.items()}
    costs = models[runtime_name]["costs"]
    unsupported, int8_warnings, layers = [], [], []
    for op in model.ops:
        reasons = check_op(model, op)
        unsupported += [{"op": op.name, "index": op.index, "version": op.version, "reason": r} for r in reasons]
        int8_warnings += int8_issues(model, op)
        layers.append({"index": op.index, "op": op.name, "version": op.version,
                       "precision": op_precision(model, op), "macs": op_macs(model, op),
                       "output_shape": list(model.tensors[op.outputs[0]].shape) if op.outputs else [],
                       "ms": round(op_cycles(model, op, costs) / clock * 1e3, 3),
                       "supported": not reasons})
    rt = runtimes[runtime_name]
    scratch = {op.index: cmsis_scratch(model, op) for op in model.ops} if rt.get("cmsis_nn") else {}
    planned = greedy_arena(lifetimes(model, scratch))
    arena = estimated_arena = planned + persistent_bytes(model)
    arena_source = "estimated"
    try:
        measured = measured_arena(model_path)
    except EdgekdError as e:  # an op TFLM lacks that the checks above missed
        measured = None
        if not unsupported:
            unsupported.append({"op": "?", "index": -1, "version": 0, "reason": str(e)})
    if measured is not None:
        # The host build runs reference kernels: CMSIS-NN's scratch buffers come on top, planned.
        arena = measured + planned - greedy_arena(lifetimes(model, {}))
        arena_source = "measured (TFLite Micro on host)" + (" + CMSIS-NN scratch, estimated" if scratch else "")
    ram = arena + rt["ram_bytes"]
    flash = model.size_bytes + rt["flash_bytes"]  # TFLM reads the flatbuffer in place from flash
    by_runtime = {name: round(sum(op_cycles(model, op, m["costs"]) for op in model.ops) / clock * 1e3, 2)
                  for name, m in models.items()}
    budgets = (profile["ram_bytes"], profile["flash_bytes"])
    # None: the board's memory is not published, so only an unsupported op settles the question.
    fits = False if unsupported else None if None in budgets else ram <= budgets[0] and flash <= budgets[1]
    return {
        "device": profile["name"], "source": "estimated", "model": str(model.path),
        "runtime": runtime_name,
        "latency_ms": {"estimate": by_runtime[runtime_name],
                       **latency_range(by_runtime[runtime_name], models[runtime_name]["error_range_pct"]),
                       "by_runtime": by_runtime},
        "calibration": {name: m["calibration"] for name, m in models.items()},
        "macs": sum(layer["macs"] for layer in layers),
        "ram_bytes": ram, "arena_bytes": arena, "arena_source": arena_source, "arena_runtime": ARENA_RUNTIME,
        "arena_estimate_bytes": estimated_arena, "flash_bytes": flash,
        "weights_bytes": sum(t.data_bytes for t in model.tensors),
        "ram_budget_bytes": profile["ram_bytes"], "flash_budget_bytes": profile["flash_bytes"],
        "fits": fits, "unsupported_ops": unsupported, "int8_warnings": sorted(set(int8_warnings)),
        "layers": layers,
    }
