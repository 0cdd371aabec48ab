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
    onnx_format.any_batch does (LiteRT infers every other shape when the input is resized). A
    reshape whose leading `fixed` was not the batch changes the answers; the Runner checks them."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    relabelled = False
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.RESHAPE \
                    or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            target = graph.tensors[op.inputs[1]]
            data = model.buffers[target.buffer].data
            if data is None or target.type != schema.TensorType.INT32:
                continue
            shape = np.frombuffer(bytes(data), np.int32).copy()
            if len(shape) and shape[0] == fixed and -1 not in shape:
                shape[0] = -1
                model.buffers[target.buffer].data = np.frombuffer(shape.tobytes(), np.uint8)
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
    A batch runs in one call when the interpreter accepts a resized input, else in a copy made for
    any batch (`any_batch`) when that copy gives the file's own answers, else sample by sample:
    litert-torch writes batch 1, and one image at a time runs the embedded LeNet-5 as float32
    TFLite at half the speed of batches of 128."""

    def __init__(self, path, threads: int = 1):
        self.path, self.threads = Path(path), threads
        self.interp = self._interpreter(model_path=str(path))
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        self.shape = [int(d) for d in self.input["shape"]]
        self.batch = self.shape[0]  # the batch the interpreter is allocated for
        self.fixed_batch = False

    def _interpreter(self, **model):
        with quiet_stderr():
            interp = Interpreter(**model, num_threads=self.threads)
            interp.allocate_tensors()
        return interp

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.fixed_batch and len(x) != self.shape[0]:
            try:
                return self._run(x, len(x))
            except (RuntimeError, ValueError):  # a graph built for its batch size only
                self.batch = -1  # -1: resize back before the next call
                self.fixed_batch = not self._use_any_batch_copy()
                if not self.fixed_batch:
                    return self._run(x, len(x))
        return self._run(x, self.shape[0])

    def _use_any_batch_copy(self) -> bool:
        """Swaps in `any_batch`'s copy of the file if it gives the file's own answers on a random
        batch of 3 x the fixed size."""
        content = any_batch(self.path.read_bytes(), self.shape[0])
        if content is None:
            return False
        x = np.random.default_rng(0).random([3 * self.shape[0], *self.shape[1:]], dtype=np.float32)
        ref, original = self._run(x, self.shape[0]), self.interp
        self.interp, self.batch = self._interpreter(model_content=content), self.shape[0]
        try:
            if same_answers(self._run(x, len(x)), ref):
                return True
        except (RuntimeError, ValueError):  # LiteRT refuses the copy, or this batch
            pass
        self.interp, self.batch = original, -1
        return False

    def _run(self, x: np.ndarray, step: int) -> np.ndarray:
        if step != self.batch:
            self.interp.resize_tensor_input(self.input["index"], [step, *self.shape[1:]])
            with quiet_stderr():
                self.interp.allocate_tensors()
            self.batch = step
        out = []
        for i in range(0, len(x), step):
            self.interp.set_tensor(self.input["index"], self._quantize(x[i:i + step]))
            self.interp.invoke()
            out.append(self._dequantize(self.interp.get_tensor(self.output["index"])))
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
