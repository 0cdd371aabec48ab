"""A small read-only view of a .tflite flatbuffer: tensors, operators, op versions, metadata.

It uses the schema module generated from TFLite's schema.fbs that ships inside ai-edge-litert
(so the field layout is the official one), and turns it into plain Python objects.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgekdError

DTYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "INT16": 2, "INT8": 1,
               "FLOAT64": 8, "BOOL": 1, "UINT32": 4, "UINT16": 2, "INT4": 0.5, "UINT64": 8}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise EdgekdError("reading .tflite files needs ai-edge-litert: pip install ai-edge-litert") from None
    return schema_py_generated


def _names(enum_class) -> dict:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


@dataclass
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple
    constant: bool          # has data in the file (weights, biases, shape constants)
    data_bytes: int         # size of that data in the file
    scale: list = field(default_factory=list)
    zero_point: list = field(default_factory=list)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return int(np.ceil(self.elements * DTYPE_BYTES.get(self.dtype, 4)))


@dataclass
class Op:
    index: int
    name: str               # builtin operator name, e.g. CONV_2D, or CUSTOM:<code>
    version: int
    inputs: list            # tensor indices (-1 = optional input left out)
    outputs: list
    options: object         # the schema's options object (stride, padding, ...) or None


@dataclass
class TFLiteModel:
    path: Path
    size_bytes: int
    tensors: list
    ops: list
    inputs: list
    outputs: list
    subgraphs: int
    metadata: dict          # name -> raw bytes

    def edgekd_metadata(self) -> dict:
        """The JSON an edgekd export stores under the metadata name "edgekd", or {}."""
        raw = self.metadata.get("edgekd")
        if not raw:
            return {}
        try:
            return json.loads(raw.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {}


def read_tflite(path) -> TFLiteModel:
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"model {path} not found")
    buf = path.read_bytes()
    s = _schema()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise EdgekdError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = s.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:  # noqa: BLE001 - any decoding failure means a damaged file
        raise EdgekdError(f"{path} could not be decoded as a TFLite model ({type(e).__name__})") from None
    op_names, type_names = _names(s.BuiltinOperator), _names(s.TensorType)
    buffers = model.buffers or []
    graph = model.subgraphs[0]

    def buffer_size(t) -> int:
        b = buffers[t.buffer] if t.buffer < len(buffers) else None
        if b is None:
            return 0
        if b.data is not None:
            return len(b.data)
        return int(b.size or 0)  # large models keep data outside the flatbuffer table (offset/size)

    tensors = []
    for i, t in enumerate(graph.tensors or []):
        q = t.quantization
        tensors.append(Tensor(
            index=i, name=(t.name or b"").decode(errors="replace"), dtype=type_names.get(t.type, str(t.type)),
            shape=tuple(int(d) for d in (t.shape if t.shape is not None else [])),
            constant=buffer_size(t) > 0, data_bytes=buffer_size(t),
            scale=[float(v) for v in (q.scale if q is not None and q.scale is not None else [])],
            zero_point=[int(v) for v in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]))
    ops = []
    for i, op in enumerate(graph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        # builtinCode replaced the int8 deprecatedBuiltinCode at 127; files carry either.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.customCode or b'').decode(errors='replace')}"
        ops.append(Op(i, name, int(code.version or 1), [int(v) for v in op.inputs],
                      [int(v) for v in op.outputs], op.builtinOptions))
    metadata = {}
    for m in model.metadata or []:
        b = buffers[m.buffer] if m.buffer < len(buffers) else None
        if b is not None and b.data is not None:
            metadata[(m.name or b"").decode(errors="replace")] = bytes(b.data)
    return TFLiteModel(path, len(buf), tensors, ops, [int(v) for v in graph.inputs],
                       [int(v) for v in graph.outputs], len(model.subgraphs), metadata)


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


def op_precision(model, op) -> str:
    types = {model.tensors[i].dtype for i in op.inputs + op.outputs if i >= 0}
    return "float32" if "FLOAT32" in types else "int8" if "INT8" in types else "int16" if "INT16" in types else "other"
