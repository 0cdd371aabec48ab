"""Microcontroller estimate from the .tflite alone: TFLite Micro op support, flash, RAM and latency.

Nothing here runs the model. Every number comes from the file and the device profile, and every
result says `source: estimated`.
"""
from ..errors import EdgekdError
from .tflite import read_tflite

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
# Persistent arena allocations, from the sizes of TFLM's structs on a 32-bit MCU: one
# TfLiteEvalTensor (data, dims, type) per tensor, one TfLiteNode plus kernel OpData per op, and
# for quantized conv / fully connected a multiplier and a shift (int32 each) per output channel.
EVAL_TENSOR_BYTES, NODE_BYTES, OP_DATA_BYTES, PER_CHANNEL_BYTES = 12, 36, 64, 8


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def op_macs(model, op) -> int:
    """Multiply-accumulates of one op (0 for ops that are not matrix products)."""
    t = model.tensors
    out = t[op.outputs[0]]
    if op.name == "CONV_2D":            # filter [Cout, kh, kw, Cin/groups]
        _, kh, kw, cin = t[op.inputs[1]].shape
        return out.elements * kh * kw * cin
    if op.name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]
        return out.elements * t[op.inputs[1]].shape[1] * t[op.inputs[1]].shape[2]
    if op.name == "FULLY_CONNECTED":    # filter [out, in]
        return out.elements * t[op.inputs[1]].shape[-1]
    if op.name == "TRANSPOSE_CONV":     # inputs: output shape, filter [Cout, kh, kw, Cin], input
        _, kh, kw, _ = t[op.inputs[1]].shape
        return t[op.inputs[2]].elements * kh * kw * t[op.inputs[1]].shape[0]
    if op.name == "BATCH_MATMUL":
        return out.elements * t[op.inputs[0]].shape[-1]
    return 0


def _op_precision(model, op) -> str:
    types = {model.tensors[i].dtype for i in op.inputs + op.outputs if i >= 0}
    return "float32" if "FLOAT32" in types else "int8" if "INT8" in types else "int16" if "INT16" in types else "other"


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
    if _op_precision(model, op) == "float32":
        return [f"{op.name} runs in float32 (reference kernels only, no CMSIS-NN)"]
    if op.name in WEIGHTED_OPS and len(op.inputs) > 1:
        w = model.tensors[op.inputs[1]]
        if w.dtype == "INT8" and any(z != 0 for z in w.zero_point):
            return [f"{op.name} weights are int8 with a non-zero zero point (CMSIS-NN needs symmetric)"]
    return []


def lifetimes(model, scratch: dict) -> list:
    """(size, first op, last op) of every buffer the arena must hold: activations, graph inputs and
    outputs (alive for the whole run), and per-op scratch buffers."""
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
    buffers = [(model.tensors[i].nbytes, first[i], last.get(i, first[i])) for i in first]
    buffers += [(size, index, index) for index, size in scratch.items() if size > 0]
    return buffers


def greedy_arena(buffers) -> int:
    """Arena bytes from TFLM's greedy planner: largest buffer first, each at the lowest offset
    that does not overlap a placed buffer alive at the same time."""
    placed = []
    for size, start, end in sorted(buffers, key=lambda b: -b[0]):
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
    total = len(model.tensors) * EVAL_TENSOR_BYTES + len(model.ops) * (NODE_BYTES + OP_DATA_BYTES)
    for op in model.ops:
        if op.name in WEIGHTED_OPS and len(op.outputs):
            total += model.tensors[op.outputs[0]].shape[-1] * PER_CHANNEL_BYTES
    return _align(total)


def op_cycles(model, op, runtime: dict) -> float:
    """Cycles of one op: MACs x cycles-per-MAC for matrix ops, elements x cycles-per-element for the
    others (the larger of input and output, so pooling counts its window), plus a fixed per-op
    interpreter cost. Float ops use the runtime's float32 rate."""
    macs = op_macs(model, op)
    float_op = _op_precision(model, op) == "float32"
    if macs:
        table = runtime["cycles_per_mac"]
        rate = table.get("float32", table["default"]) if float_op else table.get(op.name.lower(), table["default"])
        work = macs * rate
    else:
        table = runtime["cycles_per_element"]
        elements = max(model.tensors[i].elements for i in op.inputs + op.outputs
                       if i >= 0 and not model.tensors[i].constant)
        work = elements * table.get(op.name.lower(), table["default"])
    return work + runtime["cycles_per_op"]


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
    unsupported, int8_warnings, layers = [], [], []
    for op in model.ops:
        reasons = check_op(model, op)
        unsupported += [{"op": op.name, "index": op.index, "version": op.version, "reason": r} for r in reasons]
        int8_warnings += int8_issues(model, op)
        layers.append({"index": op.index, "op": op.name, "version": op.version,
                       "precision": _op_precision(model, op), "macs": op_macs(model, op),
                       "output_shape": list(model.tensors[op.outputs[0]].shape) if op.outputs else [],
                       "ms": round(op_cycles(model, op, runtimes[runtime_name]) / clock * 1e3, 3),
                       "supported": not reasons})
    rt = runtimes[runtime_name]
    scratch = {op.index: cmsis_scratch(model, op) for op in model.ops} if rt.get("cmsis_nn") else {}
    arena = greedy_arena(lifetimes(model, scratch)) + persistent_bytes(model)
    ram = arena + rt["ram_bytes"]
    flash = model.size_bytes + rt["flash_bytes"]  # TFLM reads the flatbuffer in place from flash
    by_runtime = {name: round(sum(op_cycles(model, op, r) for op in model.ops) / clock * 1e3, 2)
                  for name, r in runtimes.items()}
    fits = not unsupported and ram <= profile["ram_bytes"] and flash <= profile["flash_bytes"]
    return {
        "device": profile["name"], "source": "estimated", "model": str(model.path),
        "runtime": runtime_name,
        "latency_ms": {"estimate": by_runtime[runtime_name], "by_runtime": by_runtime},
        "calibration": {name: r.get("calibration", "uncalibrated") for name, r in runtimes.items()},
        "macs": sum(layer["macs"] for layer in layers),
        "ram_bytes": ram, "arena_bytes": arena, "flash_bytes": flash,
        "weights_bytes": sum(t.data_bytes for t in model.tensors),
        "ram_budget_bytes": profile["ram_bytes"], "flash_budget_bytes": profile["flash_bytes"],
        "fits": fits, "unsupported_ops": unsupported, "int8_warnings": sorted(set(int8_warnings)),
        "layers": layers,
    }
