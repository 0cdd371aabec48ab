"""ONNX: float32 through torch's exporter (dynamic batch), int8 through onnxruntime.quantization
(static QDQ, S8S8, per-channel weights unless --per-tensor; or dynamic)."""
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .checks import same_answers

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


def any_batch(model, fixed: int) -> bytes | None:
    """The model made for any batch size, serialized, or None when it has no shapes to relabel:
    the first dimension of its input and outputs made symbolic, intermediate shapes dropped (for
    onnxruntime to infer), and each constant Reshape target that begins with the fixed batch made
    to infer it (-1). A reshape whose leading `fixed` was not the batch changes the answers; the
    Runner checks them."""
    values = [model.graph.input[0], *model.graph.output]
    if any(len(v.type.tensor_type.shape.dim) == 0 for v in values):
        return None
    for value in values:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    for node in model.graph.node:
        target = constants.get(node.input[1]) if node.op_type == "Reshape" else None
        shape = onnx.numpy_helper.to_array(target).copy() if target is not None else None
        if shape is not None and shape.ndim == 1 and len(shape) and shape[0] == fixed and -1 not in shape:
            shape[0] = -1
            target.CopyFrom(onnx.numpy_helper.from_array(shape, target.name))
    return model.SerializeToString()


def ops(path) -> list[str]:
    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


class Runner:
    """Runs an ONNX file in onnxruntime: one thread by default (like a small device, and fair to
    the host); query-only teachers run it with more. A file whose batch dimension is fixed
    (torch's default exporter writes batch 1) runs as a copy made for any batch (`any_batch`)
    when that copy gives the file's own answers, else in chunks of its fixed size: one image at
    a time runs the CIFAR ResNet-56 at about 300 images/s on 2 threads here, batches of 256 at 490."""

    def __init__(self, path, threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.name, self.shape = inp.name, list(inp.shape)
        self.chunk = 256
        fixed = self.shape[0] if isinstance(self.shape[0], int) and self.shape[0] > 0 else None
        if fixed:
            batched = self._any_batch_session(path, options, fixed)
            self.session, self.chunk = (batched, 256) if batched is not None else (self.session, fixed)

    def _any_batch_session(self, path, options, fixed: int):
        """A session of `any_batch`'s copy of the file when it gives the file's own answers on a
        random batch of 3 * fixed, else None."""
        dims = self.shape[1:]
        if not all(isinstance(d, int) and d > 0 for d in dims):
            return None
        relabelled = any_batch(onnx.load(str(path)), fixed)
        if relabelled is None:
            return None
        x = np.random.default_rng(0).random([3 * fixed, *dims], dtype=np.float32)
        ref = np.concatenate([self.session.run(None, {self.name: x[i:i + fixed]})[0] for i in range(0, len(x), fixed)])
        try:
            session = ort.InferenceSession(relabelled, options, providers=["CPUExecutionProvider"])
            ours = session.run(None, {self.name: x})[0]
        except Exception:  # noqa: BLE001 - onnxruntime refuses the copy, or this batch
            return None
        return session if same_answers(ours, ref) else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.session.run(None, {self.name: x[i:i + self.chunk]})[0]
                               for i in range(0, len(x), self.chunk)])
