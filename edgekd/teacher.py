"""Teachers as black boxes: load a model file of unknown architecture as a differentiable graph.

Every format becomes a torch.fx GraphModule (torch.export and TorchScript through an
ExportedProgram, ONNX through onnx2torch). One graph walker then finds what the methods may use:
the inputs of BatchNorm layers with their running statistics, and the penultimate features (the
input of the last linear layer). Adding a format is adding one loader to FORMATS.
"""
import io
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.fx

from .errors import EdgekdError
from .fileio import sha256
from .measure import count_macs

# Sizes tried, in order, when a TorchScript file does not say what input it takes.
_TRIAL_SIZES = (28, 32, 64, 96, 128, 224)


@dataclass
class LoadOptions:
    input_shape: tuple[int, int, int] | None = None
    arch: str | None = None  # edgekd zoo architecture for a plain state_dict
    trust_pickle: bool = False


@dataclass
class Loaded:
    graph: torch.fx.GraphModule
    input_shape: tuple[int, int, int] | None  # None: not recorded in the file


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def detect_format(path: Path) -> str:
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
        f"{path} is not a TorchScript, torch.export (.pt2), ONNX or torch.save file "
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


def _trial_shapes(module) -> list[tuple[int, int, int]]:
    first = next((p for p in module.parameters() if p.dim() == 4), None)
    channels = [first.shape[1]] if first is not None else [3, 1]
    return [(c, s, s) for c in channels for s in _TRIAL_SIZES]


def _load_torchscript(path: Path, opts: LoadOptions) -> Loaded:
    from torch._export.converter import TS2EPConverter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        script = torch.jit.load(str(path), map_location="cpu").eval()
    shapes = [opts.input_shape] if opts.input_shape else _trial_shapes(script)
    for shape in shapes:
        try:
            with torch.no_grad():
                script(torch.zeros(1, *shape))
        except Exception:  # noqa: BLE001 - any failure means "not this shape"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ep = TS2EPConverter(script, (torch.zeros(1, *shape),)).convert()
        except Exception as e:  # noqa: BLE001
            raise EdgekdError(f"cannot convert TorchScript {path} to a graph ({_first_line(e)}); "
                              "save the model with torch.export instead") from None
        return Loaded(ep.module(), shape)
    tried = ", ".join("x".join(map(str, s)) for s in shapes)
    raise EdgekdError(f"TorchScript {path} rejected every input shape tried ({tried}); "
                      "pass --input-shape C,H,W")


def _load_onnx(path: Path, opts: LoadOptions) -> Loaded:
    import onnx
    import onnx2torch
    from onnx import version_converter

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise EdgekdError(f"{path} is not a valid ONNX model ({_first_line(e)})") from None
    # onnx2torch knows opsets up to 17 and refuses Reshape(allowzero=1), which torch's exporter
    # writes; allowzero only differs when a target dimension is 0, which a classifier never has.
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Reshape" and attr.name == "allowzero":
                attr.i = 0
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    if opset > 17:
        model = version_converter.convert_version(model, 17)
    try:
        graph = onnx2torch.convert(model).eval()
    except NotImplementedError as e:
        raise EdgekdError(f"ONNX teacher {path} uses an op edgekd cannot make differentiable: {e}; "
                          "export the teacher as TorchScript or .pt2 instead") from None
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:])
    return Loaded(graph, shape if len(shape) == 3 and all(shape) else None)


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
    shape = input_shape or _guess_module_shape(module)
    batch = torch.export.Dim("batch", min=1)
    try:
        ep = torch.export.export(module, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
    except Exception as e:  # noqa: BLE001
        raise EdgekdError(f"torch.export cannot capture the teacher ({_first_line(e)})") from None
    return Loaded(ep.module(), tuple(shape))


def _guess_module_shape(module) -> tuple[int, int, int]:
    for shape in _trial_shapes(module):
        try:
            with torch.no_grad():
                module(torch.zeros(1, *shape))
            return shape
        except Exception:  # noqa: BLE001
            continue
    raise EdgekdError("cannot tell the teacher's input shape; pass --input-shape C,H,W")


FORMATS = {
    # name: (loader, what it is)
    "torch-export": (_load_export, "torch.export archive (.pt2)"),
    "torchscript": (_load_torchscript, "TorchScript archive (torch.jit.save)"),
    "onnx": (_load_onnx, "ONNX model, converted to torch with onnx2torch"),
    "checkpoint": (_load_checkpoint, "torch.save state_dict (+ --teacher-arch) or pickled module"),
}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# What a method can use, found by walking the graph.

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


@dataclass
class Teacher:
    path: Path
    format: str
    sha256: str
    graph: torch.fx.GraphModule
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_one: bool  # the graph was captured for batch 1: run per sample under vmap
    bn_nodes: list = field(default_factory=list)  # the BatchNorm nodes of the graph
    feature_node: object = None  # input of the last linear layer
    feature_dim: int = 0
    stage_nodes: list = field(default_factory=list)  # last node of each spatial size
    params: int = 0
    macs: int = 0
    _graphs: dict = field(default_factory=dict, repr=False)  # (bn, maps) -> rewritten graph

    @property
    def bn_stats(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(running_mean, running_var) of each BatchNorm, read from the graph (so after .to())."""
        return [_bn_stats(self.graph, n) for n in self.bn_nodes]

    @property
    def stage_sizes(self) -> list[tuple[int, int]]:
        """The spatial size of each stage_nodes output."""
        return [tuple(n.meta["tensor_meta"].shape[2:]) for n in self.stage_nodes]

    def to(self, device):
        self.graph.to(device)
        self._graphs.clear()  # rewritten graphs hold the buffers of before the move
        return self

    @property
    def access(self) -> set[str]:
        """What distillation methods may use besides gradients through the logits."""
        return {"logits"} | ({"features"} if self.feature_node is not None else set()) | (
            {"bn"} if self.bn_nodes else set())

    def __call__(self, x):
        return self.run(x).logits

    def run(self, x, bn: bool = False, maps: bool = False) -> TeacherOutput:
        """Logits and penultimate features, plus the BatchNorm inputs and the stage feature maps
        when asked for."""
        key = (bn, maps)
        if key not in self._graphs:
            extra = ([self.feature_node] if self.feature_node is not None else []) + \
                ([n.args[0] for n in self.bn_nodes] if bn else []) + (self.stage_nodes if maps else [])
            self._graphs[key] = _graph_returning(self.graph, extra)
        graph = self._graphs[key]
        if self.batch_one:
            outs = torch.vmap(lambda xi: tuple(o.squeeze(0) for o in graph(xi.unsqueeze(0))))(x)
        else:
            outs = graph(x)
        logits, rest = outs[0], list(outs[1:])
        features = rest.pop(0).flatten(1) if self.feature_node is not None else None
        bn_inputs = rest[:len(self.bn_nodes)] if bn else []
        return TeacherOutput(logits, features, bn_inputs, rest[len(bn_inputs):])


def load_teacher(path, input_shape=None, arch=None, trust_pickle=False) -> Teacher:
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"teacher file {path} not found")
    fmt = detect_format(path)
    opts = LoadOptions(tuple(input_shape) if input_shape else None, arch, trust_pickle)
    try:
        loaded = FORMATS[fmt][0](path, opts)
    except EdgekdError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail anywhere inside a loader
        raise EdgekdError(f"cannot load {FORMATS[fmt][1]} {path} ({_first_line(e)})") from None
    gm = loaded.graph
    shape = tuple(input_shape or loaded.input_shape or ())
    if not shape:
        raise EdgekdError(f"cannot tell the input shape of {path}; pass --input-shape C,H,W")
    if loaded.input_shape and input_shape and tuple(input_shape) != loaded.input_shape:
        raise EdgekdError(f"teacher {path} takes inputs of shape {_fmt(loaded.input_shape)}, "
                          f"not {_fmt(input_shape)}; drop --input-shape or correct it")
    nodes = list(gm.graph.nodes)
    bn_nodes = [n for n in nodes if _is_batch_norm(gm, n)]
    linears = [n for n in nodes if _is_linear(gm, n)]
    teacher = Teacher(
        path=path, format=fmt, sha256=sha256(path), graph=gm, input_shape=shape, num_classes=0,
        batch_one=False,
        bn_nodes=bn_nodes,
        feature_node=_linear_input(linears[-1]) if linears else None,
        params=sum(p.numel() for p in gm.parameters()) + sum(b.numel() for b in gm.buffers()))
    teacher.num_classes, teacher.batch_one, teacher.feature_dim = _probe_forward(teacher)
    teacher.stage_nodes = _stage_nodes(gm, torch.zeros(1 if teacher.batch_one else 2, *shape))
    teacher.macs = count_macs(teacher, shape)
    return teacher


def _probe_forward(teacher: Teacher) -> tuple[int, bool, int]:
    """Runs the teacher once: the class count, whether it only takes batches of one, and the
    size of its penultimate features."""
    with torch.no_grad():
        try:
            logits, features, *_ = teacher.run(torch.zeros(2, *teacher.input_shape))
            batch_one = False
        except EdgekdError:
            raise
        except Exception as e:  # noqa: BLE001
            try:
                teacher.batch_one = batch_one = True
                logits, features, *_ = teacher.run(torch.zeros(1, *teacher.input_shape))
            except EdgekdError:
                raise
            except Exception:  # noqa: BLE001
                raise EdgekdError(f"the teacher rejects inputs of shape {_fmt(teacher.input_shape)} "
                                  f"({_first_line(e)}); pass the right --input-shape C,H,W") from None
    if logits.dim() != 2 or logits.shape[0] != (1 if batch_one else 2) or logits.shape[1] < 2:
        raise EdgekdError(f"the teacher returns a tensor of shape {tuple(logits.shape)}; edgekd needs "
                          "class logits of shape (batch, classes)")
    if not torch.isfinite(logits).all():
        raise EdgekdError("the teacher returns NaN or infinite logits on a zero input")
    return logits.shape[1], batch_one, 0 if features is None else features.shape[1]


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
