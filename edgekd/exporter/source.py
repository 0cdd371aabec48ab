"""SOURCE: a run directory from `edgekd distill`, or a model file (.pt2, TorchScript, ONNX, or a
zoo state_dict with --teacher-arch). Either becomes a Source: the model graph with its
preprocessing, what the artifacts' metadata must say about it, and where its generators are."""
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .. import __version__
from ..errors import EdgekdError
from ..teacher import Teacher, load_teacher, read_metadata


@dataclass
class Source:
    model: Teacher  # the graph, with its BatchNorm statistics for calibration synthesis
    name: str  # artifact file stem
    mean: list | None
    std: list | None
    default_out: Path
    generators: list = field(default_factory=list)  # a run's trained generators
    info: dict = field(default_factory=dict)  # source, run, teacher sha256, class names...

    def to_model_space(self, x):
        """[0, 1] images -> the model's normalised inputs."""
        if self.mean is None:
            return x
        return (x - _column(self.mean, x)) / _column(self.std, x)

    def to_pixels(self, x):
        if self.mean is None:
            return x
        return x * _column(self.std, x) + _column(self.mean, x)


def _column(values, like):
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


class Deployable(torch.nn.Module):
    """What a device runs: images in [0, 1] (NCHW, or NHWC with `nhwc`), the normalisation
    folded in front of the model, logits out."""

    def __init__(self, source: Source, nhwc: bool = False):
        super().__init__()
        # Not .eval(): the graph of a torch.export archive refuses train()/eval(); it is an
        # inference graph already, and this flag tells the exporters so.
        self.training = False
        self.model, self.nhwc, self.normalise = source.model.graph, nhwc, source.mean is not None
        if self.normalise:
            self.register_buffer("mean", torch.tensor(source.mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(source.std).view(1, -1, 1, 1))

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        if self.normalise:
            x = (x - self.mean) / self.std
        return self.model(x)


def load_source(path, teacher_arch=None, input_shape=None, mean=None, std=None, trust_pickle=False) -> Source:
    path = Path(path)
    if path.is_dir():
        return _load_run(path)
    if not path.exists():
        raise EdgekdError(f"{path} not found: pass a run directory from `edgekd distill` or a model file")
    model = load_teacher(path, input_shape, teacher_arch, trust_pickle)
    if model.graph is None:
        raise EdgekdError(f"{path} runs only in {model.backend}, so edgekd cannot re-export it; "
                          "export the run directory of a student distilled from it")
    if model.batch_one:  # its reshapes say 1: converters and checks run it on batches
        raise EdgekdError(f"{path} was captured for batch 1 only, and edgekd exports graphs that take any batch: "
                          "save it with a dynamic batch (torch.export.export(..., dynamic_shapes=...)), or "
                          "export the run directory of a student distilled from it")
    meta = read_metadata(path)
    mean = mean if mean is not None else meta.get("mean")
    std = std if std is not None else meta.get("std")
    _check_preprocessing(mean, std, model.input_shape[0])
    return Source(model, path.stem, mean, std, path.with_name(f"{path.stem}_export"), info={
        "source": str(path.resolve()), "source_run": None,
        "teacher_sha256": meta.get("teacher_sha256", model.sha256)})


def _load_run(run: Path) -> Source:
    from ..generators import load_generators

    config_path, model_path = run / "config.yaml", run / "student.pt2"
    if not config_path.is_file() or not model_path.is_file():
        raise EdgekdError(f"{run} is not a finished edgekd run (it needs config.yaml and student.pt2)")
    try:
        config = yaml.safe_load(config_path.read_text())
        pre, teacher = config["preprocessing"], config["teacher"]
    except (yaml.YAMLError, KeyError, TypeError):
        raise EdgekdError(f"{config_path} is not an edgekd run configuration") from None
    model = load_teacher(model_path)
    generators = []
    if (run / "generator.pt").is_file():
        try:
            generators = load_generators(run / "generator.pt")
        except Exception as e:  # noqa: BLE001 - a corrupt file can fail anywhere in torch.load
            raise EdgekdError(f"cannot read {run / 'generator.pt'} ({str(e).splitlines()[0][:200]})") from None
    return Source(model, "student", pre["mean"], pre["std"], run / "export", generators, info={
        "source": str(model_path.resolve()), "source_run": str(run.resolve()),
        "teacher_sha256": teacher["sha256"], "student": config.get("student"), "method": config.get("method")})


def _check_preprocessing(mean, std, channels):
    if (mean is None) != (std is None) or (mean is not None and not len(mean) == len(std) == channels):
        raise EdgekdError(f"give --mean and --std together, one value per input channel ({channels})")


def metadata(source: Source, fmt: str, precision: str, input_shape, layout: str, int8_io: bool,
             calibration: str | None, class_names=None) -> dict:
    """What every artifact carries, so a device integrator needs nothing else."""
    if int8_io:
        # The quantizer fixes the input range to [0, 1]: scale 1/255, zero point -128.
        inputs = {"dtype": "int8", "value": "pixel (0..255) - 128", "scale": 1 / 255, "zero_point": -128}
    else:
        inputs = {"dtype": "float32", "range": [0, 1]}
    return {
        "edgekd_version": __version__, "format": fmt, "precision": precision,
        "input": {"shape": list(input_shape), "layout": layout, **inputs},
        "output": {"name": "logits", "dtype": "int8" if int8_io else "float32"},
        "preprocessing": {"folded_into_graph": True, "mean": source.mean, "std": source.std},
        "num_classes": source.model.num_classes, "class_names": class_names,
        "calibration": calibration, **source.info,
    }
