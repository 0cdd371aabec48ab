"""Teachers as black boxes: load a model file of unknown architecture, differentiable when it
can be, and otherwise as a model edgekd can only run and query.

Differentiable formats become a torch.fx GraphModule (torch.export and TorchScript through an
ExportedProgram, ONNX through onnx2torch). One graph walker then finds what the methods may use:
the inputs of BatchNorm layers with their running statistics, and the penultimate features (the
input of the last linear layer). Query-only teachers are a forward pass outside torch: an ONNX
file torch cannot rebuild (onnxruntime), a .tflite file (LiteRT) or a Python callable; methods
get their outputs and no gradients. Adding a format is adding one loader to FORMATS.
"""
import hashlib
import importlib
import io
import json
import re
import sys
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.fx

from .errors import EdgekdError
from .fileio import sha256
from .measure import count_macs

# Sizes tried when a TorchScript file or a pickled module does not say what input it takes,
# by input channels, the most likely first (MNIST's 28 for greyscale, CIFAR's 32 for colour):
# a network with global pooling accepts several, and then the first is taken, with a note.
_TRIAL_SIZES = {1: (28, 32, 64, 96, 128, 224), 3: (32, 28, 64, 96, 128, 224)}


# Where a teacher runs: "torch" (a differentiable graph), "runtime" (query-only: onnxruntime,
# LiteRT or the user's callable), or "auto" (torch whenever the file allows it).
BACKENDS = ("auto", "torch", "runtime")
# What the teacher returns; "auto" tells them apart on a probe batch.
OUTPUTS = ("auto", "logits", "probabilities", "label")
# A label-only teacher's answer as logits: the label's logit this far above the others, so that
# a softmax at any temperature edgekd uses is one-hot and KD on it is cross-entropy on the label.
LABEL_LOGIT = 1e4
CALLABLE_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")  # package.module:function


@dataclass
class LoadOptions:
    input_shape: tuple[int, int, int] | None = None
    arch: str | None = None  # edgekd zoo architecture for a plain state_dict
    trust_pickle: bool = False
    backend: str = "auto"
    timeout: float = 60.0  # seconds a callable teacher may take for one batch


@dataclass
class Loaded:
    graph: torch.fx.GraphModule | None  # None: query-only
    input_shape: tuple[int, int, int] | None  # None: not recorded in the file
    runner: Callable | None = None  # query-only: float32 NCHW numpy batch -> numpy outputs
    backend: str = "torch"  # what runs it: torch | onnxruntime | litert | callable
    # What the user should know of how the file was read: a guessed input size, or why a
    # teacher that could have had gradients runs query-only.
    note: str | None = None
    sha256: str | None = None  # identity of a teacher that is not a file (a callable)
    declared_classes: int | None = None  # for a teacher that answers with labels only


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def detect_format(path: Path) -> str:
    with open(path, "rb") as f:
        if f.read(8)[4:] == b"TFL3":  # the flatbuffer's file identifier
            return "tflite"
    names = _zip_names(path)
    if any(n.endswith("/constants.pkl") or n.split("/", 1)[-1].startswith("code/") for n in names):
        return "torchscript"
    if any("/models/" in n or n.endswith("archive_format") for n in names):
        return "torch-export"
    if any(n.endswith("data.pkl") for n in names) or _is_legacy_torch_save(path):
        return "checkpoint"
    if not names and path.suffix.lower() == ".onnx" or _looks_like_onnx(path):
        return "onnx"
    raise EdgekdError(
        f"{path} is not a TorchScript, torch.export (.pt2), ONNX, TFLite or torch.save file "
        "(it may be truncated or not a model)")


def _is_legacy_torch_save(path: Path) -> bool:
    """torch.save before 1.6 wrote a bare pickle stream (the CIFAR ResNet checkpoints in shared/)."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def _looks_like_onnx(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(64)
    return head[:1] == b"\x08" and b"ir_version" not in head and len(head) > 4  # protobuf field 1: ir_version


def _input_shape_of_export(ep) -> tuple[int, int, int] | None:
    user = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs]
    val = user[0].meta.get("val") if user else None
    if val is None or val.dim() != 4:
        return None
    return tuple(int(s) for s in val.shape[1:])


def _load_export(path: Path, opts: LoadOptions) -> Loaded:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.load(str(path))
    return Loaded(ep.module(), _input_shape_of_export(ep))


def _input_shape_of(module, given, what: str) -> tuple[tuple[int, int, int], str | None]:
    """The input shape of a model that does not record it: `given` if the model accepts it, else
    the first of the trial shapes it accepts, with a note when it accepts others too (a guess the
    user should know of)."""
    first = next((p for p in [*module.parameters(), *module.buffers()] if p.dim() == 4), None)
    channels = [first.shape[1]] if first is not None else [3, 1]
    trials = [given] if given else [(c, s, s) for c in channels for s in _TRIAL_SIZES.get(c, _TRIAL_SIZES[3])]
    accepted = []
    for shape in trials:
        try:
            with torch.no_grad():
                module(torch.zeros(1, *shape))
            accepted.append(shape)
        except Exception:  # noqa: BLE001 - any failure means "not this shape"
            continue
    if not accepted:
        tried = ", ".join(map(_fmt, trials))
        raise EdgekdError(f"{what} rejected every input shape tried ({tried}); pass --input-shape C,H,W")
    note = None
    if len(accepted) > 1:
        note = (f"the file does not record its input size and the model accepts {', '.join(map(_fmt, accepted))}: "
                f"taking {_fmt(accepted[0])}; pass --input-shape C,H,W if it was trained at another")
    return accepted[0], note


def _load_torchscript(path: Path, opts: LoadOptions) -> Loaded:
    from torch._export.converter import TS2EPConverter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        script = torch.jit.load(str(path), map_location="cpu").eval()
    shape, note = _input_shape_of(script, opts.input_shape, f"TorchScript {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = TS2EPConverter(script, (torch.zeros(1, *shape),)).convert()
    except Exception as e:  # noqa: BLE001
        raise EdgekdError(f"cannot convert TorchScript {path} to a graph ({_first_line(e)}); "
                          "save the model with torch.export instead") from None
    return Loaded(ep.module(), shape, note=note)


def _load_onnx(path: Path, opts: LoadOptions) -> Loaded:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise EdgekdError(f"{path} is not a valid ONNX model ({_first_line(e)})") from None
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:])
    shape = shape if len(shape) == 3 and all(shape) else None
    why = None
    if opts.backend != "runtime":
        graph, why = _onnx_graph(model, path)
        if graph is not None:
            return Loaded(graph, shape)
        if opts.backend == "torch":
            raise EdgekdError(f"ONNX teacher {path} cannot be made differentiable ({why}); "
                              "drop --teacher-backend torch to distil from its outputs alone")
    from .exporter.onnx_format import Runner

    note = f"{why}: it runs in onnxruntime, query-only (no gradients, slower methods)" if why else None
    return Loaded(None, shape, Runner(path, torch.get_num_threads()), "onnxruntime", note)


def _onnx_graph(model, path: Path) -> tuple[torch.fx.GraphModule | None, str | None]:
    """The ONNX model as a torch graph, or (None, why not). onnx2torch knows most ops only up to
    opset 17, and onnx's version converter has no way down for several ops torch's default
    exporter writes at opset 18+ (Pad, ConstantOfShape); those newer versions differ from the old
    ones only in features a classifier export does not use, so the last attempt relabels the
    model as opset 17 after moving Reduce* axes back to attributes. Every attempt must agree with
    onnxruntime on the file itself, so a relabelling that changed the meaning is never used."""
    import onnx2torch
    from onnx import version_converter

    # onnx2torch refuses Reshape(allowzero=1), which torch's exporter writes; allowzero only
    # differs when a target dimension is 0, which a classifier never has.
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Reshape" and attr.name == "allowzero":
                attr.i = 0
    attempts = [("as it is", lambda m: m), ("converted to opset 17", lambda m: version_converter.convert_version(m, 17)),
                ("relabelled as opset 17", _relabel_opset17)]
    why = None
    for name, attempt in attempts:
        try:
            graph = onnx2torch.convert(attempt(model)).eval()
        except NotImplementedError as e:  # onnx2torch: no converter for an op at this version
            why = why or f"onnx2torch cannot convert {_op_of(e)}"
            continue
        except Exception as e:  # noqa: BLE001 - the version converter's assertions, among others
            why = why or _first_line(e)
            continue
        if _agrees_with_onnxruntime(graph, path):
            return graph, None
        why = why or f"the torch graph {name} disagrees with onnxruntime"
    return None, why


def _op_of(error: NotImplementedError) -> str:
    found = re.search(r"operation_type='(\w+)', version=(\d+)", str(error))
    return f"{found[1]}-{found[2]}" if found else _first_line(error)


def _relabel_opset17(model):
    import onnx

    relabelled = type(model)()
    relabelled.CopyFrom(model)
    model = relabelled
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    constants.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                      for n in model.graph.node if n.op_type == "Constant" and n.attribute[0].name == "value"})
    for node in model.graph.node:
        if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum" and len(node.input) > 1:
            axes = constants.get(node.input[1])
            if axes is None:
                raise ValueError(f"{node.op_type} with computed axes")
            del node.input[1:]
            node.attribute.append(onnx.helper.make_attribute("axes", [int(a) for a in axes.ravel()]))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 17
    return model


def _agrees_with_onnxruntime(graph, path: Path) -> bool:
    from .exporter.onnx_format import Runner

    runner = Runner(path)
    shape = [d if isinstance(d, int) and d > 0 else 2 for d in runner.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    try:
        with torch.no_grad():
            ours = graph(torch.from_numpy(x)).numpy()
    except Exception:  # noqa: BLE001
        return False
    ref = runner(x)
    return ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-3 * (1 + np.abs(ref).max())


def _load_tflite(path: Path, opts: LoadOptions) -> Loaded:
    try:
        from .exporter.tflite_format import Runner
    except ImportError:
        raise EdgekdError("a .tflite teacher runs in LiteRT: pip install ai-edge-litert "
                          "(or edgekd[tflite])") from None

    runner = Runner(path, torch.get_num_threads())
    dims = runner.shape[1:]
    if len(dims) != 3:
        raise EdgekdError(f"TFLite teacher {path} takes inputs of shape {runner.shape}; edgekd needs images "
                          "(batch, H, W, C) or (batch, C, H, W)")
    if dims[2] <= 4 < dims[0]:  # NHWC, as TFLite files usually are
        return Loaded(None, (dims[2], dims[0], dims[1]), lambda x: runner(np.ascontiguousarray(x.transpose(0, 2, 3, 1))),
                      "litert")
    return Loaded(None, tuple(dims), runner, "litert")


def _load_callable(spec: str, opts: LoadOptions) -> Loaded:
    module_name, _, attr = spec.partition(":")
    if str(Path.cwd()) not in sys.path:  # `edgekd` started from a console script does not see ./
        sys.path.insert(0, str(Path.cwd()))
    try:
        fn = importlib.import_module(module_name)
        for part in attr.split("."):
            fn = getattr(fn, part)
    except Exception as e:  # noqa: BLE001 - importing runs the user's module
        raise EdgekdError(f"cannot import the teacher callable {spec} ({type(e).__name__}: {_first_line(e)})") from None
    if not callable(fn):
        raise EdgekdError(f"teacher {spec} is not callable")
    shape = opts.input_shape or getattr(fn, "input_shape", None)
    if not shape:
        raise EdgekdError(f"a callable teacher takes no file to read its input shape from: pass --input-shape C,H,W "
                          f"(or give {attr} an input_shape attribute)")

    def run(x: np.ndarray):
        result = {}

        def call():
            try:
                result["out"] = np.asarray(fn(x), dtype=np.float32)
            except BaseException as e:  # noqa: BLE001 - reported below, in one line
                result["error"] = e

        worker = threading.Thread(target=call, daemon=True)  # daemon: a hung callable cannot hold the exit
        worker.start()
        worker.join(opts.timeout)
        if worker.is_alive():
            raise EdgekdError(f"teacher {spec} took more than {opts.timeout:g} s for a batch of {len(x)}; "
                              "make it faster or raise --teacher-timeout")
        if "error" in result:
            e = result["error"]
            raise EdgekdError(f"teacher {spec} raised {type(e).__name__}: {_first_line(e)}")
        return result["out"]

    digest = hashlib.sha256(spec.encode())  # its name and the source of its module
    module = sys.modules.get(module_name)
    if getattr(module, "__file__", None):
        digest.update(Path(module.__file__).read_bytes())
    return Loaded(None, tuple(shape), run, "callable", sha256=digest.hexdigest(),
                  declared_classes=getattr(fn, "num_classes", None))


def _load_checkpoint(path: Path, opts: LoadOptions) -> Loaded:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        if "weights_only" not in str(e) and "Unpickl" not in type(e).__name__:
            raise EdgekdError(f"cannot read {path} ({_first_line(e)})") from None
        if not opts.trust_pickle:
            raise EdgekdError(f"{path} is a pickled Python object; loading it runs code from the file. "
                              "Pass --trust-pickle only if you trust its author") from None
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(obj, torch.nn.Module):
        return _export_module(obj.eval(), opts.input_shape)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgekdError(f"{path} holds neither a model nor a state_dict")
    if not opts.arch:
        raise EdgekdError(f"{path} is a plain state_dict: say which architecture it is for with "
                          "--teacher-arch NAME (see `edgekd students`)")
    model, shape = _zoo_model(opts.arch, state, opts.input_shape)
    return _export_module(model, shape)


def _zoo_model(arch: str, state: dict, input_shape) -> tuple[torch.nn.Module, tuple]:
    from .students import STUDENTS, create_student

    STUDENTS.get(arch)  # one-line error for an unknown name
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out_weight = [v for k, v in state.items() if v.dim() == 2][-1]
    first_conv = next(v for v in state.values() if v.dim() == 4)
    in_channels = first_conv.shape[1]
    size = input_shape[1:] if input_shape else ((28, 28) if in_channels == 1 else (32, 32))
    model = create_student(arch, in_channels=in_channels, num_classes=out_weight.shape[0], input_size=size)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EdgekdError(f"the state_dict does not fit --teacher-arch {arch} "
                          f"({_first_line(e)})") from None
    return model.eval(), (in_channels, *size)


def _export_module(module: torch.nn.Module, input_shape) -> Loaded:
    shape, note = _input_shape_of(module, input_shape, "the teacher")
    batch = torch.export.Dim("batch", min=1)
    try:
        ep = torch.export.export(module, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
    except Exception as e:  # noqa: BLE001
        raise EdgekdError(f"torch.export cannot capture the teacher ({_first_line(e)})") from None
    return Loaded(ep.module(), tuple(shape), note=note)


FORMATS = {
    # name: (loader, what it is)
    "torch-export": (_load_export, "torch.export archive (.pt2)"),
    "torchscript": (_load_torchscript, "TorchScript archive (torch.jit.save)"),
    "onnx": (_load_onnx, "ONNX model, converted to torch with onnx2torch, else run in onnxruntime"),
    "checkpoint": (_load_checkpoint, "torch.save state_dict (+ --teacher-arch) or pickled module"),
    "tflite": (_load_tflite, "TFLite flatbuffer, run in LiteRT (float or int8)"),
    "callable": (_load_callable, "Python callable package.module:function"),
}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# What a method can use, found by walking the graph.

def _constants_as_buffers(gm: torch.nn.Module):
    """Tensor constants a graph holds as plain attributes (torch.export's lifted constants) made
    non-persistent buffers, so that .to(device) moves them with the weights."""
    for module in gm.modules():
        known = set(module._parameters) | set(module._buffers)
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and name not in known:
                delattr(module, name)
                module.register_buffer(name, value, persistent=False)


def _is_batch_norm(gm, node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), torch.nn.modules.batchnorm._BatchNorm)
    return node.op == "call_function" and "batch_norm" in str(node.target)


def _is_linear(gm, node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), torch.nn.Linear)
    return node.op == "call_function" and str(node.target) in ("aten.linear.default", "aten.addmm.default")


def _linear_input(node):
    return node.args[1] if str(node.target) == "aten.addmm.default" else node.args[0]


def _attr(gm, node_or_tensor) -> torch.Tensor:
    if not isinstance(node_or_tensor, torch.fx.Node):
        return node_or_tensor
    obj = gm
    for part in node_or_tensor.target.split("."):
        obj = getattr(obj, part)
    return obj


def _bn_stats(gm, node) -> tuple[torch.Tensor, torch.Tensor]:
    if node.op == "call_module":
        bn = gm.get_submodule(node.target)
        return bn.running_mean, bn.running_var
    return _attr(gm, node.args[3]), _attr(gm, node.args[4])


def _graph_returning(gm: torch.fx.GraphModule, extra: list) -> torch.fx.GraphModule:
    """A copy of the graph whose forward returns (logits, *values of the `extra` nodes).

    Rewritten once at load, so the hot path is one plain forward: no Interpreter stepping node
    by node, and only the intermediates asked for stay alive."""
    graph, env = torch.fx.Graph(), {}
    for node in gm.graph.nodes:
        if node.op == "output":
            leaves = [a for a in torch.utils._pytree.tree_leaves(node.args[0])]
            if len(leaves) != 1 or not isinstance(leaves[0], torch.fx.Node):
                raise EdgekdError(f"the teacher returns {len(leaves)} values; edgekd needs a model that "
                                  "returns one tensor of logits")
            graph.output((env[leaves[0]], *(env[n] for n in extra)))
        else:
            env[node] = graph.node_copy(node, lambda n: env[n])
    return torch.fx.GraphModule(gm, graph)


def _stage_nodes(gm: torch.fx.GraphModule, example: torch.Tensor) -> list:
    """The last node at each spatial size of 2 px or more (in graph order): the output of each
    resolution stage, whose attention maps feature-map distillation compares."""
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm).propagate(example)
    last, order = {}, {}
    for i, node in enumerate(gm.graph.nodes):
        shape = getattr(node.meta.get("tensor_meta"), "shape", None)
        if node.op.startswith("call_") and shape is not None and len(shape) == 4 and min(shape[2:]) >= 2:
            last[tuple(shape[2:])], order[node] = node, i
    return sorted(last.values(), key=order.get)


class TeacherOutput(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor | None  # penultimate features (input of the last linear layer)
    bn_inputs: list  # input of each BatchNorm, when asked for
    maps: list  # output of each resolution stage, when asked for


class QueryBudgetSpent(Exception):
    """A teacher call would go past --max-queries; raised before the teacher sees the batch."""


@dataclass
class Teacher:
    path: Path  # for a callable teacher, its package.module:function
    format: str
    sha256: str
    graph: torch.fx.GraphModule | None  # None: query-only (see runner)
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_one: bool  # the graph was captured for batch 1: run per sample under vmap
    runner: Callable | None = None  # the forward pass of a query-only teacher
    backend: str = "torch"
    output: str = "logits"  # what the teacher returns: logits | probabilities | label
    note: str | None = None
    bn_nodes: list = field(default_factory=list)  # the BatchNorm nodes of the graph
    feature_node: object = None  # input of the last linear layer
    feature_dim: int = 0
    stage_nodes: list = field(default_factory=list)  # last node of each spatial size
    params: int | None = 0
    macs: int | None = 0
    # Samples the teacher has been asked about, and the most it may be (--max-queries).
    # before_query(total) runs before each call: distill records the total there first, so a
    # kill can lose a checkpoint but never the count of queries spent.
    queries: int = 0
    query_limit: int | None = None
    before_query: Callable | None = field(default=None, repr=False)
    compiled: bool = False  # rewritten graphs go through torch.compile
    # Where the graph runs: kept here, since a graph may hold no tensor to ask (a TorchScript
    # file's weights become constants, a query-only teacher has no graph).
    device: torch.device = torch.device("cpu")
    _graphs: dict = field(default_factory=dict, repr=False)  # (bn, maps) -> rewritten graph

    @property
    def source(self) -> str:
        """What load_teacher takes to load it again."""
        return str(self.path) if self.format == "callable" else str(self.path.resolve())

    @property
    def bn_stats(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(running_mean, running_var) of each BatchNorm, read from the graph (so after .to())."""
        return [_bn_stats(self.graph, n) for n in self.bn_nodes]

    @property
    def stage_sizes(self) -> list[tuple[int, int]]:
        """The spatial size of each stage_nodes output."""
        return [tuple(n.meta["tensor_meta"].shape[2:]) for n in self.stage_nodes]

    def to(self, device, memory_format=torch.preserve_format):
        self.device = torch.device(device)
        if self.graph is not None:
            self.graph.to(device, memory_format=memory_format)
        self._graphs.clear()  # rewritten graphs hold the buffers of before the move
        return self

    @property
    def access(self) -> set[str]:
        """What distillation methods may use: its outputs, and, from a graph that answers more
        than a label, "gradients" through the teacher to its input, its penultimate "features"
        and "bn" statistics."""
        if self.output == "label" or self.graph is None:
            return {"outputs"}
        return {"outputs", "gradients"} | ({"features"} if self.feature_node is not None else set()) | (
            {"bn"} if self.bn_nodes else set())

    def __call__(self, x):
        return self.run(x).logits

    def count_queries(self, n: int):
        if self.query_limit is not None and self.queries + n > self.query_limit:
            raise QueryBudgetSpent
        if self.before_query:
            self.before_query(self.queries + n)
        self.queries += n

    def run(self, x, bn: bool = False, maps: bool = False) -> TeacherOutput:
        """Logits and penultimate features, plus the BatchNorm inputs and the stage feature maps
        when asked for. A query-only teacher gives its outputs alone, as logits."""
        self.count_queries(len(x))
        if self.graph is None:
            # A runtime or callable is given a plain NCHW array, whatever the tensor's layout.
            out = torch.from_numpy(self.runner(x.detach().float().cpu().contiguous().numpy())).to(x.device)
            return TeacherOutput(self.as_logits(out), None, [], [])
        key = (bn, maps)
        if key not in self._graphs:
            extra = ([self.feature_node] if self.feature_node is not None else []) + \
                ([n.args[0] for n in self.bn_nodes] if bn else []) + (self.stage_nodes if maps else [])
            self._graphs[key] = _graph_returning(self.graph, extra)
            if self.compiled:
                self._graphs[key].compile()
        graph = self._graphs[key]
        if self.batch_one:
            outs = torch.vmap(lambda xi: tuple(o.squeeze(0) for o in graph(xi.unsqueeze(0))))(x)
        else:
            outs = graph(x)
        logits, rest = outs[0], list(outs[1:])
        features = rest.pop(0).flatten(1) if self.feature_node is not None else None
        bn_inputs = rest[:len(self.bn_nodes)] if bn else []
        return TeacherOutput(self.as_logits(logits), features, bn_inputs, rest[len(bn_inputs):])

    def as_logits(self, out: torch.Tensor) -> torch.Tensor:
        """The teacher's answer as logits: probabilities become log-probabilities (the same
        softmax), a label becomes one-hot logits LABEL_LOGIT apart."""
        if self.output == "probabilities":
            return out.clamp_min(1e-12).log()
        if self.output == "label":
            labels = out.argmax(1) if out.dim() == 2 else out.long()
            return torch.nn.functional.one_hot(labels, self.num_classes).float() * LABEL_LOGIT
        return out


def load_teacher(path, input_shape=None, arch=None, trust_pickle=False, backend="auto", output="auto",
                 timeout=60.0) -> Teacher:
    """`backend` (BACKENDS) picks differentiable or query-only; `output` (OUTPUTS) says what the
    teacher returns, told apart on a probe batch when "auto"; `timeout` bounds one call of a
    callable teacher."""
    spec = str(path)
    path = Path(path)
    if path.is_file():
        fmt = detect_format(path)
    elif CALLABLE_SPEC.fullmatch(spec) and not path.suffix.lower() in (".pt", ".pt2", ".onnx", ".tflite", ".th"):
        fmt = "callable"
    else:
        raise EdgekdError(f"teacher file {path} not found (a callable teacher is written package.module:function)")
    opts = LoadOptions(tuple(input_shape) if input_shape else None, arch, trust_pickle, backend, timeout)
    try:
        loaded = FORMATS[fmt][0](spec if fmt == "callable" else path, opts)
    except EdgekdError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail anywhere inside a loader
        raise EdgekdError(f"cannot load {FORMATS[fmt][1]} {path} ({_first_line(e)})") from None
    if backend == "runtime" and loaded.graph is not None:
        raise EdgekdError(f"--teacher-backend runtime runs ONNX, TFLite and callable teachers; {path} is a "
                          f"{FORMATS[fmt][1]}: export it to ONNX to query it through onnxruntime")
    gm = loaded.graph
    shape = tuple(input_shape or loaded.input_shape or ())
    if not shape:
        raise EdgekdError(f"cannot tell the input shape of {path}; pass --input-shape C,H,W")
    if loaded.input_shape and input_shape and tuple(input_shape) != loaded.input_shape:
        raise EdgekdError(f"teacher {path} takes inputs of shape {_fmt(loaded.input_shape)}, "
                          f"not {_fmt(input_shape)}; drop --input-shape or correct it")
    teacher = Teacher(
        path=path, format=fmt, sha256=loaded.sha256 or sha256(path), graph=gm,
        input_shape=shape, num_classes=0, batch_one=False, runner=loaded.runner, backend=loaded.backend,
        note=loaded.note, params=None, macs=None)
    if gm is not None:
        nodes = list(gm.graph.nodes)
        linears = [n for n in nodes if _is_linear(gm, n)]
        teacher.bn_nodes = [n for n in nodes if _is_batch_norm(gm, n)]
        teacher.feature_node = _linear_input(linears[-1]) if linears else None
        teacher.params = sum(p.numel() for p in gm.parameters()) + sum(b.numel() for b in gm.buffers())
        _constants_as_buffers(gm)
    teacher.num_classes, teacher.batch_one, teacher.feature_dim, teacher.output = _probe_forward(
        teacher, output, loaded.declared_classes)
    if gm is not None:
        teacher.stage_nodes = _stage_nodes(gm, torch.zeros(1 if teacher.batch_one else 2, *shape))
        teacher.macs = count_macs(teacher, shape)
    return teacher


def _probe_forward(teacher: Teacher, output: str, declared_classes: int | None) -> tuple[int, bool, int, str]:
    """Runs the teacher on a few probe batches: the class count, whether it only takes batches of
    one, the size of its penultimate features and what it returns (logits, probabilities or a
    label, when `output` is "auto")."""
    probe = torch.rand(4, *teacher.input_shape, generator=torch.Generator().manual_seed(0))
    teacher.output = "logits"  # raw outputs while probing
    with torch.no_grad():
        try:
            raw, features, *_ = teacher.run(probe)
            batch_one = False
        except EdgekdError:
            raise
        except Exception as e:  # noqa: BLE001
            try:
                teacher.batch_one = batch_one = True
                raw, features, *_ = teacher.run(probe[:1])
            except EdgekdError:
                raise
            except Exception:  # noqa: BLE001
                raise EdgekdError(f"the teacher rejects inputs of shape {_fmt(teacher.input_shape)} "
                                  f"({_first_line(e)}); pass the right --input-shape C,H,W") from None
    n = 1 if batch_one else len(probe)
    labels_only = raw.dim() == 1 and raw.shape[0] == n
    if not labels_only and (raw.dim() != 2 or raw.shape[0] != n or raw.shape[1] < 2):
        raise EdgekdError(f"the teacher returns a tensor of shape {tuple(raw.shape)} for a batch of {n}; edgekd "
                          "needs (batch, classes) logits or probabilities, or (batch,) labels")
    if not torch.isfinite(raw).all():
        raise EdgekdError("the teacher returns NaN or infinite values on probe inputs")
    if labels_only:
        if output not in ("auto", "label"):
            raise EdgekdError(f"the teacher returns one label per input, not {output}; use --teacher-output label")
        if (raw != raw.round()).any() or (raw < 0).any():
            raise EdgekdError("the teacher returns one value per input that is not a class index")
        if not declared_classes:
            raise EdgekdError(f"teacher {teacher.path} returns labels only, so edgekd cannot count its classes; "
                              "give the callable a num_classes attribute")
        output, num_classes = "label", int(declared_classes)
    else:
        num_classes = raw.shape[1]
        if output == "auto":
            sums_to_one = (raw >= 0).all() and torch.allclose(raw.sum(1), torch.ones(n), atol=1e-3)
            output = "probabilities" if sums_to_one else "logits"
    return num_classes, batch_one, 0 if features is None else features.shape[1], output


def _fmt(shape) -> str:
    return "x".join(str(s) for s in shape)


def parse_shape(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise EdgekdError(f"--input-shape takes C,H,W (e.g. 3,32,32), not '{text}'")
    return shape


METADATA_FILE = "edgekd.json"  # extra file inside edgekd-made .pt2 archives


def parse_floats(text: str | None, name: str) -> list[float] | None:
    """Per-channel values from the command line, e.g. --mean 0.485,0.456,0.406."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise EdgekdError(f"{name} takes comma-separated numbers, e.g. 0.485,0.456,0.406, not '{text}'") from None


def save_export(module: torch.nn.Module, input_shape, path, metadata: dict | None = None) -> None:
    """Writes a model as a .pt2 with a dynamic batch dimension and edgekd's metadata (input
    preprocessing, classes) inside, so later commands need no flags to use it."""
    from .fileio import write_bytes

    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(module.eval(), (torch.zeros(2, *input_shape),), dynamic_shapes=({0: batch},))
    buf = io.BytesIO()
    torch.export.save(ep, buf, extra_files={METADATA_FILE: json.dumps(metadata or {})})
    write_bytes(path, buf.getvalue())


def read_metadata(path) -> dict:
    """The metadata save_export() stored, or {} for any other file."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith(f"extra/{METADATA_FILE}")), None)
            return json.loads(z.read(name)) if name else {}
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError):
        return {}
