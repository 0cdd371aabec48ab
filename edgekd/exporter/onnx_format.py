"""ONNX: float32 through torch's exporter (dynamic batch), int8 through onnxruntime.quantization
(static QDQ, S8S8, per-channel weights unless --per-tensor; or dynamic)."""
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

INPUT, OUTPUT = "input", "logits"
METADATA_KEY = "edgekd"


def export_float(model, example: torch.Tensor, path: Path, metadata: dict) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (example,), input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    program.save(str(path))
    _write(onnx.load(str(path)), path, metadata)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over edgekd's calibration samples."""

    def __init__(self, x: np.ndarray, batch: int = 32):
        self.batches = iter([{INPUT: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize(float_path: Path, precision: str, calib: np.ndarray | None, path: Path, metadata: dict,
             flags: set) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and graph clean-up first, as onnxruntime recommends before quantizing.
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        quant_pre_process(str(float_path), str(pre))
        if precision == "dynamic-int8":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8)
        else:
            quantize_static(str(pre), str(out), _Reader(calib), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            per_channel="per_tensor" not in flags)
        _write(onnx.load(str(out)), path, metadata)


def _write(model, path: Path, metadata: dict) -> None:
    from ..fileio import write_bytes

    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    model.producer_name = "edgekd"
    write_bytes(path, model.SerializeToString())


def read_metadata(path) -> dict:
    """The JSON an edgekd export stores under "edgekd" in metadata_props, or {}."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    try:
        return json.loads(props.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        return {}


def ops(path) -> list[str]:
    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


class Runner:
    """Runs an ONNX file in onnxruntime: one thread by default (like a small device, and fair to
    the host); query-only teachers run it with more. A file whose batch dimension is fixed
    (torch's default exporter writes batch 1) is fed in chunks of that size."""

    def __init__(self, path, threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.name, self.shape = inp.name, list(inp.shape)
        self.chunk = self.shape[0] if isinstance(self.shape[0], int) and self.shape[0] > 0 else 256

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.session.run(None, {self.name: x[i:i + self.chunk]})[0]
                               for i in range(0, len(x), self.chunk)])
