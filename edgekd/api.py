"""The Python API: one function per stage of the chain, each returning what the stage's JSON
file holds. The `edgekd` commands are thin layers over these functions.

    import edgekd

    summary = edgekd.distill(time_budget=3, out="runs/demo")     # the embedded MNIST teacher
    exported = edgekd.export("runs/demo")                          # runs/demo/export/export.json
    result = edgekd.probe(device="nucleo-l4r5zi")                  # the latest run's int8 model
    page = edgekd.report("runs/demo")
    final = edgekd.run("teacher.pt2", device="raspberry-pi-5", host="pi@raspberrypi.local")

Paths may be str or Path. Every failure a user can cause raises EdgekdError, with a one-line message.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgekdError, Interrupted

EMBEDDED_TEACHER = Path(__file__).parent / "assets" / "mnist_lenet5.pt2"


def data_root() -> Path:
    """Where real data lives for recipes: $EDGEKD_DATA, else ../shared beside the project."""
    return Path(os.environ.get("EDGEKD_DATA", Path.cwd().parent / "shared"))


def load_recipe(path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"recipe {path} not found")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgekdError(f"recipe {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    root = str(data_root())
    for key in ("teacher", "eval_data"):
        if isinstance(recipe.get(key), str):
            recipe[key] = recipe[key].replace("${EDGEKD_DATA}", root)
    if recipe.get("teacher") == "embedded":
        recipe["teacher"] = str(EMBEDDED_TEACHER)
    return recipe


def _quiet(*args, **kwargs):
    pass


def _shape(value):
    """(C, H, W), "C,H,W" or None -> a checked tuple or None."""
    from .teacher import parse_shape

    return parse_shape(value if value is None or isinstance(value, str) else ",".join(map(str, value)))


def _floats(value, name):
    """Per-channel values as a list, from a sequence or "a,b,c"."""
    from .teacher import parse_floats

    return parse_floats(value, name) if value is None or isinstance(value, str) else [float(v) for v in value]


def load_teacher(path, *, input_shape=None, arch=None, trust_pickle=False, backend="auto", output="auto",
                 timeout=60.0):
    """A teacher to distil from or evaluate: a TorchScript, .pt2, ONNX, TFLite or state_dict file,
    or "package.module:function". input_shape (C, H, W) when the file does not say; arch: the zoo
    architecture of a plain state_dict; backend: auto|torch|runtime; output:
    auto|logits|probabilities|label; timeout: seconds a callable teacher may take per batch.
    A pickled module loads only with trust_pickle=True (unpickling runs code)."""
    from . import teacher

    return teacher.load_teacher(path, _shape(input_shape), arch, trust_pickle, backend, output, timeout)


@dataclass
class _Choice:
    """What a new run resolves before training: shared by distill() and run()."""
    teacher: object  # teacher.Teacher
    recipe: dict
    student: str
    method: str
    out: Path


def _choose(teacher, student, method, recipe, out, teacher_options: dict, log) -> _Choice:
    from .methods import resolve_method
    from .students import resolve_student
    from .teacher import Teacher

    r = load_recipe(recipe) if recipe else {}
    t = teacher
    if not isinstance(t, Teacher):
        if t is None and r.get("teacher") is None:
            log(f"no teacher given: using the embedded MNIST LeNet-5 teacher ({EMBEDDED_TEACHER.name})")
        options = {**teacher_options, "arch": teacher_options["arch"] or r.get("teacher_arch"),
                   "input_shape": teacher_options["input_shape"] or r.get("input_shape")}
        t = load_teacher(t or r.get("teacher") or EMBEDDED_TEACHER, **options)
        if t.note:
            log(f"teacher {t.path.name}: {t.note}")
    asked = method or r.get("method", "auto")
    method = resolve_method(asked, t.access, t.input_shape[0])
    if asked == "auto" and "gradients" not in t.access:
        log(f"method auto -> {method}: the teacher can only be queried ({t.backend}, {t.output} out)")
    elif asked == "auto" and method == "procedural":
        log("method auto -> procedural: a colour teacher without BatchNorm layers, where procedural images "
            "measured better than the generators its gradients can train")
    asked = student or r.get("student") or ("lenet5_half" if t.input_shape[0] == 1 else "resnet20")
    student = resolve_student(asked, t.input_shape)
    if student != asked:
        log(f"student {asked} -> {student} for {'x'.join(map(str, t.input_shape))}")
    name = str(t.path).replace(":", "-") if t.format == "callable" else t.path.stem
    return _Choice(t, r, student, method, Path(out or f"runs/{name}-{student}-{method}"))


def distill(teacher=None, *, student=None, method=None, recipe=None, out=None, iterations=None, time_budget=None,
            eval_data=None, max_queries=None, mean=None, std=None, settings=None, device=None, precision=None,
            compile=False, seed=None, checkpoint_every=None, eval_every=None, force=False, resume=None,
            progress=True, log=print, teacher_arch=None, input_shape=None, trust_pickle=False,
            teacher_backend="auto", teacher_output="auto", teacher_timeout=60.0) -> dict:
    """Trains a compact student from `teacher` without data; returns summary.json's content.

    teacher: a file, "package.module:function" or load_teacher()'s result (the embedded MNIST
    teacher when None and no recipe names one). student / method: names or families ("mobilenet");
    chosen from the teacher when None. out: the run directory [runs/<teacher>-<student>-<method>].
    iterations / time_budget (minutes): when to stop [2000 iterations]. eval_data: labelled real
    data to report top-1 on. settings: method settings overriding the recipe's. checkpoint_every /
    eval_every: N iterations or "Mmin". device: auto|cpu|cuda|cuda:N. precision: auto|fp32|bf16|fp16.
    resume: a run directory to continue (its config.yaml holds every other setting; iterations
    and time_budget, when given, replace its budget). Under torchrun every process calls this."""
    from . import distillation as run
    from .data import check_matches, load_dataset
    from .distributed import Ranks
    from .teacher import read_metadata

    if resume is not None:
        return _resume(Path(resume), iterations, time_budget, progress, log, trust_pickle)
    ranks = Ranks.from_env(run.device_type(device or "auto"))
    log = log if ranks.main else _quiet  # under torchrun rank 0 speaks for every process
    c = _choose(teacher, student, method, recipe, out,
                {"input_shape": input_shape, "arch": teacher_arch, "trust_pickle": trust_pickle,
                 "backend": teacher_backend, "output": teacher_output, "timeout": teacher_timeout}, log)
    t, r = c.teacher, c.recipe
    # The preprocessing the teacher file records (edgekd-made .pt2 files do), unless given.
    recorded = read_metadata(t.path)
    mean = _floats(mean, "--mean") or r.get("mean") or recorded.get("mean")
    std = _floats(std, "--std") or r.get("std") or recorded.get("std")
    if (mean is None) != (std is None) or (mean and len(mean) != t.input_shape[0]):
        raise EdgekdError(f"give --mean and --std together, one value per input channel ({t.input_shape[0]})")
    given = {*r.get("settings", {}), *(settings or {})}
    settings = run.resolve_settings(c.method, r.get("settings", {}), settings or {})
    shrunk = run.batches_for_input(settings, t.input_shape, given)
    if shrunk:
        log(f"input {t.input_shape[1]}x{t.input_shape[2]}: {', '.join(shrunk)} (batches hold at most the pixels of "
            f"16 and 32 images of 224 x 224; --set them to choose)")
    eval_data = eval_data or r.get("eval_data")
    eval_set = None
    if eval_data:
        eval_set = load_dataset(eval_data, "test")
        check_matches(eval_set, t.input_shape)
    if iterations is None and time_budget is None:
        iterations, time_budget = r.get("iterations"), r.get("time_budget_minutes")
        if iterations is None and time_budget is None:
            iterations = 2000
    if ranks.main:
        run.prepare_out_dir(c.out, force)
    config = run.new_config(
        t, student=c.student, method=c.method, settings=settings, budget=run.Budget(iterations, time_budget),
        eval_data=eval_data, mean=mean, std=std, device=device or "auto", seed=seed or 0,
        precision=precision or r.get("precision", "auto"), compile=compile,
        checkpoint_every=run.parse_period(checkpoint_every or r.get("checkpoint_every"), "--checkpoint-every",
                                          (200, 5.0)),
        # By time too: a CIFAR-10 run on one core can take 9 s an iteration, and 100 iterations
        # of silence left the progress line on a 15-minute-old figure.
        eval_every=run.parse_period(eval_every or r.get("eval_every"), "--eval-every", (100, 2.0)),
        recipe=str(recipe) if recipe else None, teacher_arch=teacher_arch or r.get("teacher_arch"),
        max_queries=max_queries or r.get("max_queries"), teacher_timeout=teacher_timeout)
    log(f"teacher {t.path.name}: {t.format} in {t.backend}, input {'x'.join(map(str, t.input_shape))}, "
        f"{t.num_classes} classes, {t.output} out, {len(t.bn_nodes)} BatchNorm layers")
    log(f"method {c.method}, student {c.student}, run directory {c.out}")
    try:
        return run.distill(t, config, c.out, eval_set, show_progress=progress, log=log, ranks=ranks)
    finally:
        ranks.close()


def _resume(out: Path, iterations, time_budget, progress, log, trust_pickle) -> dict:
    import yaml

    from . import distillation as run
    from .data import load_dataset
    from .distributed import Ranks
    from .teacher import load_teacher as load

    config_path = out / "config.yaml"
    if not config_path.is_file():
        raise EdgekdError(f"{out} is not an edgekd run directory (no config.yaml)")
    config = yaml.safe_load(config_path.read_text())
    ranks = Ranks.from_env(run.device_type(config["device"]))
    log = log if ranks.main else _quiet
    if iterations is not None or time_budget is not None:  # a resumed run may be given a new budget
        config["iterations"], config["time_budget_minutes"] = iterations, time_budget
    tc = config["teacher"]
    backend = "runtime" if tc.get("backend", "torch") != "torch" and tc["format"] == "onnx" else "auto"
    t = load(tc["path"], tc["input_shape"], tc["arch"], trust_pickle, backend, tc.get("output", "auto"),
             tc.get("timeout", 60.0))
    if t.sha256 != tc["sha256"]:
        raise EdgekdError(f"teacher {tc['path']} changed since the run started (sha256 differs)")
    eval_set = load_dataset(config["eval_data"], "test") if config["eval_data"] else None
    try:
        return run.distill(t, config, out, eval_set, resume=True, show_progress=progress, log=log, ranks=ranks)
    finally:
        ranks.close()


def export(source=None, *, formats=None, precisions=None, nhwc=False, int8_io=False, per_tensor=False,
           calib="synthetic", calib_size=256, eval_data=None, out=None, force=False, teacher_arch=None,
           input_shape=None, mean=None, std=None, trust_pickle=False, device=None, log=print) -> dict:
    """Exports `source` (a run directory, or a .pt2 / TorchScript / state_dict model; the latest
    run under ./runs when None) and returns export.json's content.

    formats: "onnx", "tflite" [every one whose packages are installed]. precisions: "fp16",
    "dynamic-int8", "int8" [int8]; the fp32 file of each format is always written, the reference
    the others are checked against. calib: "synthetic" (the run's generator, or synthesized from
    the model) or a folder/file of real images. out: [RUN/export or <model>_export]."""
    from .distillation import pick_device
    from .exporter.core import export as convert
    from .exporter.formats import FORMATS, PRECISIONS
    from .exporter.source import load_source
    from .registry import did_you_mean
    from .runs import run_or_latest

    if formats is None:
        formats = [name for name, f in FORMATS.items() if f.installed()]
        skipped = [f"{f.name} (`{f.install}`)" for f in FORMATS.values() if f.name not in formats]
        if skipped:
            log(f"skipping {', '.join(skipped)}: not installed")
    precisions = list(precisions or ["int8"])
    for kind, names, known in (("format", formats, list(FORMATS)), ("precision", precisions, PRECISIONS)):
        for name in names:
            if name not in known:
                raise EdgekdError(f"unknown export {kind} '{name}'{did_you_mean(name, known)} "
                                  f"(known: {', '.join(known)})")
    flags = {f for f, on in (("nhwc", nhwc), ("int8_io", int8_io), ("per_tensor", per_tensor)) if on}
    if calib != "synthetic" and not Path(calib).exists():
        raise EdgekdError(f"--calib takes 'synthetic' or a path to real images; {calib} not found")
    src = load_source(run_or_latest(source, log), teacher_arch, _shape(input_shape), _floats(mean, "--mean"),
                      _floats(std, "--std"), trust_pickle)
    return convert(src, Path(out) if out else src.default_out, list(formats), precisions, flags, calib,
                   calib_size, eval_data, force, log, device=pick_device(device or "auto"))


def probe(model=None, *, device, runs=50, warmup=5, threads=None, eval_data=None, eval_limit=None,
          input_range=None, runtime=None, host=None, port=None, identity=None, ssh_config=None, connect_timeout=10,
          timeout=600, serial=None, benchmark_binary=None, save=True, log=print) -> dict:
    """Latency, memory and accuracy of `model` (.tflite or .onnx; the latest run's int8 model when
    None) on `device` (a profile name, see `edgekd devices`, or a profile .yaml): measured when the
    device is reachable (this machine, host= over ssh, serial= over adb), estimated for
    microcontrollers. Returns the probe JSON, saved beside the model unless save=False.
    input_range: 1 or 255, the top of the model's input range [the model's metadata]."""
    from .devices import load_profile
    from .probes import ProbeOptions, probe as run_probe, save_probe
    from .runs import int8_model_of, latest_run

    if model is None:
        model = int8_model_of(latest_run())
        log(f"probing the latest run's {model}")
    profile = load_profile(device)
    options = ProbeOptions(runs=runs, warmup=warmup, threads=threads, eval_data=eval_data, eval_limit=eval_limit,
                           input_range=input_range, runtime=runtime, host=host, port=port, identity=identity,
                           ssh_config=ssh_config, connect_timeout=connect_timeout, timeout=timeout, serial=serial,
                           benchmark_binary=benchmark_binary)
    result = run_probe(model, profile, options)
    if save:
        log(f"saved {save_probe(result)}")
    return result


def report(run=None, *, out=None, log=print) -> dict:
    """Writes report.md and a self-contained report.html for a run directory (the latest under
    ./runs when None) into out [RUN/report]; returns their paths and the parts not found."""
    from .reporting import build_report
    from .runs import run_or_latest

    md, page, missing = build_report(run_or_latest(run, log), out)
    return {"markdown": str(md), "html": str(page), "missing": missing}


def run(teacher=None, *, device="host", student=None, method=None, recipe=None, out=None, iterations=None,
        time_budget=None, eval_data=None, max_queries=None, mean=None, std=None, seed=None, train_device=None,
        force=False, progress=True, log=print, host=None, port=None, identity=None, ssh_config=None, serial=None,
        runtime=None, teacher_arch=None, input_shape=None, trust_pickle=False, teacher_backend="auto",
        teacher_output="auto", teacher_timeout=60.0) -> dict:
    """The whole chain: distill -> export -> probe on `device` -> report. A stage whose result the
    run directory already holds, newer than its input, is skipped; an interrupted distillation
    resumes from its checkpoint; force=True starts everything again. Returns the student's int8
    size, top-1 (with eval_data) and latency on the device, and what each stage did."""
    import yaml

    from .devices import load_profile
    from .probes import probe_path
    from .runs import int8_model_of

    profile = load_profile(device)  # a wrong name fails before any training
    c = _choose(teacher, student, method, recipe, out,
                {"input_shape": input_shape, "arch": teacher_arch, "trust_pickle": trust_pickle,
                 "backend": teacher_backend, "output": teacher_output, "timeout": teacher_timeout}, log)
    out, stages = c.out, {}
    config = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").is_file() else None
    eval_data = eval_data or c.recipe.get("eval_data") or (config or {}).get("eval_data")
    if config and not force:
        asked = {"teacher": c.teacher.sha256, "student": c.student, "method": c.method}
        held = {"teacher": config["teacher"]["sha256"], "student": config["student"], "method": config["method"]}
        differ = [k for k in asked if asked[k] != held[k]]
        if differ:
            raise EdgekdError(f"{out} holds a run with another {' and '.join(differ)}; give another --out, "
                              "or --force to replace it")

    def done_before(stage, path):
        log(f"{stage}: done already ({path}), skipped")
        stages[stage] = "done before"
        return json.loads(path.read_text())

    try:
        if config and not force and (out / "summary.json").is_file():
            summary = done_before("distill", out / "summary.json")
        elif config and not force:
            log(f"distill: resuming {out}")
            summary = distill(resume=out, iterations=iterations, time_budget=time_budget, progress=progress,
                              log=log, trust_pickle=trust_pickle)
            stages["distill"] = "resumed"
        else:
            summary = distill(c.teacher, student=c.student, method=c.method, recipe=recipe, out=out,
                              iterations=iterations, time_budget=time_budget, eval_data=eval_data,
                              max_queries=max_queries, mean=mean, std=std, device=train_device, seed=seed,
                              force=force, progress=progress, log=log, teacher_arch=teacher_arch,
                              teacher_timeout=teacher_timeout)
            stages["distill"] = "ran"
    except Interrupted as e:
        raise Interrupted(e.state, "run the same command again to continue") from None
    if not force and _newer(out / "export" / "export.json", out / "student.pt2"):
        exported = done_before("export", out / "export" / "export.json")
    else:
        exported = export(out, eval_data=eval_data, force=True, device=train_device, log=log)
        stages["export"] = "ran"
    model = int8_model_of(out)
    saved = probe_path(model, profile["name"])
    if not force and _newer(saved, model):
        result = done_before("probe", saved)
    else:
        result = probe(model, device=device, host=host, port=port, identity=identity, ssh_config=ssh_config,
                       serial=serial, runtime=runtime, log=log)
        stages["probe"] = "ran"
    page = report(out, log=log)
    artifact = next(a for a in exported["artifacts"] if Path(a["path"]).name == model.name)
    return {"run_dir": str(out), "student": summary["student"], "method": summary["method"], "model": str(model),
            "size_bytes": artifact["size_bytes"], "teacher_top1": summary.get("teacher_top1"),
            "student_top1": summary.get("student_top1"), "int8_top1": artifact["top1"],
            "device": result["device"], "latency_ms": result["latency_ms"], "latency_source": result["source"],
            "fits": result.get("fits"), "report": page["html"], "stages": stages}


def _newer(result: Path, source: Path) -> bool:
    """Whether a stage's result exists and was written after its input (make's rule)."""
    return result.is_file() and source.is_file() and result.stat().st_mtime >= source.stat().st_mtime
