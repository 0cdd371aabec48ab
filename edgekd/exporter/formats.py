"""The table of export formats. It drives dispatch (which module converts), argument checks
(which precisions and flags a format takes) and the benchmark (every format x precision)."""
import importlib
import importlib.util
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import EdgekdError

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    module: str  # edgekd.exporter.<module>: export_float, quantize, Runner, ops, read_metadata
    precisions: tuple[str, ...]
    flags: frozenset  # optional behaviours it honours: "nhwc", "int8_io", "per_tensor"
    needs: tuple[str, ...]  # importable packages
    install: str

    def check_installed(self):
        missing = [m for m in self.needs if importlib.util.find_spec(m) is None]
        if missing:
            raise EdgekdError(f"{self.name} export needs {', '.join(missing)}: run `{self.install}`")

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.needs)

    def impl(self):
        self.check_installed()
        return importlib.import_module(f"{__package__}.{self.module}")


FORMATS = {
    "onnx": Format("onnx", ".onnx", "onnx_format", ("fp32", "dynamic-int8", "int8"),
                   frozenset({"nhwc", "per_tensor"}), ("onnx", "onnxruntime", "onnxscript"),
                   "pip install onnx onnxruntime onnxscript"),
    "tflite": Format("tflite", ".tflite", "tflite_format", ("fp32", "fp16", "dynamic-int8", "int8"),
                     frozenset({"nhwc", "int8_io"}), ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
                     "pip install litert-torch"),
}

FLAG_NAMES = {"nhwc": "--nhwc", "int8_io": "--int8-io", "per_tensor": "--per-tensor"}


def plan(formats: list[str], precisions: list[str], flags: set[str]) -> list[tuple[Format, str]]:
    """(format, precision) pairs to produce, fp32 first for each format (the reference the others
    are checked against). A precision or flag that no chosen format takes is an error; one that
    some take applies to those."""
    chosen = [FORMATS[f] for f in formats]
    for p in precisions:
        if not any(p in f.precisions for f in chosen):
            takers = [f.name for f in FORMATS.values() if p in f.precisions]
            raise EdgekdError(f"{p} is available for {' and '.join(takers)} only; add --{takers[0]}")
    for flag in flags:
        if not any(flag in f.flags for f in chosen):
            takers = [f.name for f in FORMATS.values() if flag in f.flags]
            raise EdgekdError(f"{FLAG_NAMES[flag]} applies to {' and '.join(takers)} only; add --{takers[0]}")
    if "int8_io" in flags and "int8" not in precisions:
        raise EdgekdError("--int8-io makes the int8 file's input and output int8; add --int8")
    return [(f, p) for f in chosen for p in PRECISIONS if p == "fp32" or (p in precisions and p in f.precisions)]


@contextmanager
def captured_output():
    """Sends stdout and stderr, C++ logs included, to a temporary file while converters run
    (they print progress bars and log lines); yields a list that receives the text, so a
    failure can be explained from it."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    text = []
    with tempfile.TemporaryFile("w+b") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            log.seek(0)
            text.append(log.read().decode(errors="replace"))


def unsupported_op(graph, error_text: str) -> str | None:
    """'op X in module Y (Type)' for the first op of the model's graph that the error names.
    The loaded graph keeps each node's module stack from the original model."""
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if re.search(rf"\b{re.escape(target)}\b", error_text):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            if not stack:
                return f"op {target}"
            path, cls = stack[-1]
            return f"op {target} in module '{path}' ({getattr(cls, '__name__', str(cls).split('.')[-1])})"
    return None
