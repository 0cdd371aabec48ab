"""TFLite: float32 through litert-torch; fp16 weights, dynamic-range int8 and full-integer int8
through ai-edge-quantizer; every file runs in ai-edge-litert's interpreter."""
import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from ..probes.tflite import read_tflite
from .checks import same_answers

METADATA_NAME = "edgekd"


def export_float(model, example: torch.Tensor, path: Path, metadata: dict) -> None:
    import litert_torch

    litert_torch.config.show_progress = False
    # Batch 1, static: what microcontroller runtimes and the int8 quantizer expect.
    edge = litert_torch.convert(model, (example[:1],))
    _write(edge.model_content(), path, metadata)


def quantize(float_path: Path, precision: str, calib: np.ndarray | None, path: Path, metadata: dict,
             flags: set) -> None:
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    float_bytes = float_path.read_bytes()
    q = quantizer.Quantizer(float_bytes)
    if precision == "fp16":
        q.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif precision == "dynamic-int8":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    else:
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        if "int8_io" not in flags:  # float input and output around an int8 body
            for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                q.update_quantization_recipe(".*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    with contextlib.redirect_stderr(io.StringIO()):  # tqdm bars
        ranges = _calibrate(float_bytes, q.get_quantization_recipe(), calib) if q.need_calibration else None
        model = q.quantize(ranges, enable_progress_report=False).quantized_model
    _write(model, path, metadata)


def _calibrate(float_bytes: bytes, quant_recipe, calib: np.ndarray) -> dict:
    """Activation ranges: the min and max over all samples. (The quantizer's default is a moving
    average of per-sample extremes, which clips more: it cost ResNet-20 a point of top-1.)"""
    from ai_edge_quantizer import calibrator, recipe_manager

    def widen(old, new):
        if not old:
            return new
        return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(quant_recipe)
    interp = Interpreter(model_content=float_bytes)
    signature, spec = next(iter(interp.get_signature_list().items()))
    cal = calibrator.Calibrator(float_bytes, num_threads=1, qsv_update_func=widen)
    cal.calibrate({signature: [{spec["inputs"][0]: x[None]} for x in calib]}, manager)
    ranges = cal.get_model_qsvs()
    # The input range is exactly [0, 1]: int8 input then means pixel - 128 (scale 1/255), and
    # no real image is clipped.
    name = interp.get_input_details()[0]["name"]
    ranges[name] = {"min": np.zeros_like(ranges[name]["min"]), "max": np.ones_like(ranges[name]["max"])}
    return ranges


def _write(model_bytes, path: Path, metadata: dict) -> None:
    from ..fileio import write_bytes

    # read_model_from_bytearray resolves buffers stored after the flatbuffer (the quantizer
    # writes those), so the repacked file is self-contained.
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in model.metadata or [] if m.name != METADATA_NAME.encode()] + [entry]
    write_bytes(path, bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def any_batch(content: bytes, fixed: int) -> bytes | None:
    """The model made for any batch size, or None when it has nothing to relabel: each constant
    RESHAPE target that begins with the fixed batch made to infer it (-1), as
    onnx_format.any_batch does, and each STRIDED_SLICE that takes the whole fixed batch (begin 0,
    end `fixed`, stride 1) made to take the whole batch, whatever it is (its end mask). LiteRT
    infers every other shape when the input is resized. A leading `fixed` that was not the batch
    changes the answers; the Runner checks them."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))

    def constant(graph, index):
        tensor = graph.tensors[index] if index >= 0 else None
        data = model.buffers[tensor.buffer].data if tensor is not None else None
        if data is None or tensor.type != schema.TensorType.INT32:
            return None
        return np.frombuffer(bytes(data), np.int32).copy(), tensor.buffer

    relabelled = False
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            kind = max(code.builtinCode, code.deprecatedBuiltinCode)
            if kind == schema.BuiltinOperator.RESHAPE and len(op.inputs) >= 2:
                target = constant(graph, op.inputs[1])
                if target is not None and len(target[0]) and target[0][0] == fixed and -1 not in target[0]:
                    shape, buffer = target
                    shape[0] = -1
                    model.buffers[buffer].data = np.frombuffer(shape.tobytes(), np.uint8)
                    relabelled = True
            elif kind == schema.BuiltinOperator.STRIDED_SLICE and len(op.inputs) == 4:
                begin, end, stride = (constant(graph, i) for i in op.inputs[1:])
                if None not in (begin, end, stride) and len(end[0]) and \
                        (begin[0][0], end[0][0], stride[0][0]) == (0, fixed, 1):
                    op.builtinOptions.endMask |= 1
                    relabelled = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if relabelled else None


def read_metadata(path) -> dict:
    return read_tflite(path).edgekd_metadata()


def ops(path) -> list[str]:
    return sorted({op.name for op in read_tflite(path).ops})


@contextlib.contextmanager
def quiet_stderr():
    """Silences the interpreter's C++ log line ("INFO: Created TensorFlow Lite XNNPACK delegate"),
    which would break edgekd's promise of one-line errors on stderr."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class Runner:
    """Runs a .tflite file in LiteRT's interpreter, one thread by default; int8 inputs and outputs
    are (de)quantized here with the file's own scale and zero point, exactly as a device would.
    litert-torch writes batch 1, and one image at a time runs the embedded LeNet-5 as float32
    TFLite at half the speed of batches of 128; so a batch of another size runs in one call when
    an interpreter for any batch gives the file's own answers (those of its fixed batch): the
    file itself resized, else `any_batch`'s copy. Never unchecked: a resized file can run and be
    wrong (the CIFAR ResNet-20's strided slices kept sample 0 of every batch, 91 -> 17 %)."""

    def __init__(self, path, threads: int = 1):
        self.path, self.threads = Path(path), threads
        self.interp = self._interpreter(model_path=str(path))  # stays at the file's own batch
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        self.shape = [int(d) for d in self.input["shape"]]
        self.batched = None  # the interpreter for any batch once checked; False: none agrees

    def _interpreter(self, **model):
        with quiet_stderr():
            interp = Interpreter(**model, num_threads=self.threads)
            interp.allocate_tensors()
        return interp

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self.shape[0] and self.batched is None:
            self.batched = self._any_batch_interpreter() or False
        if len(x) != self.shape[0] and self.batched:
            return self._run(self.batched, x, len(x))
        return self._run(self.interp, x, self.shape[0])

    def _any_batch_interpreter(self):
        """The first of (the file, `any_batch`'s copy) that, resized, answers a random batch of
        3 x the fixed size as the file does at its fixed size; None if neither does."""
        x = np.random.default_rng(0).random([3 * self.shape[0], *self.shape[1:]], dtype=np.float32)
        ref = self._run(self.interp, x, self.shape[0])
        content = self.path.read_bytes()
        for candidate in (content, any_batch(content, self.shape[0])):
            if candidate is None:
                continue
            try:
                interp = self._interpreter(model_content=candidate)
                if same_answers(self._run(interp, x, len(x)), ref):
                    return interp
            except (RuntimeError, ValueError):  # LiteRT refuses the resize, or this batch
                continue
        return None

    def _run(self, interp, x: np.ndarray, step: int) -> np.ndarray:
        """x in chunks of `step` (the last one padded with copies of its last sample)."""
        if interp.get_input_details()[0]["shape"][0] != step:
            interp.resize_tensor_input(self.input["index"], [step, *self.shape[1:]])
            with quiet_stderr():
                interp.allocate_tensors()
        out = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), 0)]) if len(chunk) < step else chunk
            interp.set_tensor(self.input["index"], self._quantize(padded))
            interp.invoke()
            out.append(self._dequantize(interp.get_tensor(self.output["index"]))[:len(chunk)])
        return np.concatenate(out)

    def _quantize(self, x):
        if self.input["dtype"] == np.float32:
            return x.astype(np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(self.input["dtype"])
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.input["dtype"])

    def _dequantize(self, y):
        if self.output["dtype"] == np.float32:
            return y
        scale, zero = self.output["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
