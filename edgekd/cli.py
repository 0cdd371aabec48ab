"""The `edgekd` command line. Each command reads files and writes files, so each stands alone."""
import json
import logging
import os
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .errors import EdgekdError
from .teacher import parse_floats

console = Console(soft_wrap=True)  # log lines stay whole lines when piped to a file
EMBEDDED_TEACHER = Path(__file__).parent / "assets" / "mnist_lenet5.pt2"


def _settings(pairs) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise EdgekdError(f"--set takes KEY=VALUE, not '{pair}'")
        import yaml
        out[key.strip()] = yaml.safe_load(value)
    return out


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


def _preprocessing(teacher_path, mean, std):
    """Preprocessing the teacher file records (edgekd-made .pt2 files do), unless given."""
    from .teacher import read_metadata

    meta = read_metadata(teacher_path)
    return (mean if mean is not None else meta.get("mean"), std if std is not None else meta.get("std"))


device_option = click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N",
                             help="where to compute [auto: the GPU when torch sees one]")


def teacher_access_options(command):
    """How to reach a teacher: the options of every command that loads one."""
    from .teacher import BACKENDS, OUTPUTS

    for option in reversed([
        click.option("--teacher-backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                     help="torch: a differentiable graph; runtime: query an ONNX file through onnxruntime"),
        click.option("--teacher-output", type=click.Choice(OUTPUTS), default="auto", show_default=True,
                     help="what the teacher returns; label: use only its top-1 class (needs more queries)"),
        click.option("--teacher-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
                     show_default=True, help="seconds a callable teacher may take for one batch"),
    ]):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekd")
def cli():
    """edgekd: distil a black-box classifier into a small student without its training data,
    then export, quantize and probe it for edge devices."""


@cli.command()
@click.argument("teacher", required=False, type=click.Path())
@click.option("--student", help="student architecture (see `edgekd students`)")
@click.option("--method", help="see `edgekd methods`; auto (default): the best the teacher allows")
@click.option("--recipe", type=click.Path(), help="YAML recipe with the settings of a published experiment")
@click.option("--out", type=click.Path(), help="run directory to create (default runs/<teacher>-<student>)")
@click.option("--teacher-arch", help="zoo architecture of a plain state_dict teacher (e.g. resnet56)")
@click.option("--input-shape", help="C,H,W when the teacher file does not say")
@click.option("--trust-pickle", is_flag=True, help="allow loading a pickled module (runs code from the file)")
@teacher_access_options
@click.option("--max-queries", type=click.IntRange(1),
              help="most teacher samples to query in training; the student then goes on learning from the pool")
@click.option("--iterations", type=click.IntRange(1), help="stop after N iterations")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), help="stop after MINUTES of training")
@click.option("--eval-data", type=click.Path(), help="real labelled data to report accuracy on (idx, CIFAR bin, ImageFolder, .npz)")
@click.option("--mean", help="teacher normalisation mean per channel, e.g. 0.485,0.456,0.406")
@click.option("--std", help="teacher normalisation std per channel")
@click.option("--checkpoint-every", metavar="N|Mmin",
              help="iterations (N) or minutes of training (e.g. 5min) between checkpoints [200 and 5min]")
@click.option("--eval-every", metavar="N|Mmin", help="iterations (N) or minutes (e.g. 2min) between evaluations [100]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a method setting")
@device_option
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="autocast precision [auto: bf16 on GPUs that have it, fp32 on the CPU]")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the teacher, student and generators")
@click.option("--nproc", type=click.IntRange(1), help="start N processes with torchrun on this machine (one per GPU)")
@click.option("--seed", type=int, help="random seed [0]")
@click.option("--resume", type=click.Path(), help="continue the run in this directory")
@click.option("--force", is_flag=True, help="replace an existing run directory")
@click.option("--no-progress", is_flag=True, help="plain log lines instead of a progress bar")
def distill(teacher, student, method, recipe, out, teacher_arch, input_shape, trust_pickle, teacher_backend,
            teacher_output, teacher_timeout, max_queries, iterations, time_budget, eval_data, mean, std,
            checkpoint_every, eval_every, overrides, device, precision, compile_, nproc, seed, resume, force,
            no_progress):
    """Train a compact student from TEACHER without data: a TorchScript, .pt2, ONNX, TFLite or
    state_dict file, or a Python callable package.module:function."""
    from . import distill as run
    from .data import check_matches, load_dataset
    from .distributed import Ranks
    from .methods import resolve_method
    from .teacher import load_teacher, parse_shape

    if nproc and nproc > 1:
        return _launch_torchrun(nproc)
    if resume:
        return _resume(Path(resume), iterations, time_budget, no_progress, trust_pickle)
    ranks = Ranks.from_env(run.device_type(device or "auto"))
    _quiet_unless_main(ranks)
    r = load_recipe(recipe) if recipe else {}
    teacher = teacher or r.get("teacher")
    if teacher is None:
        teacher = str(EMBEDDED_TEACHER)
        console.print(f"no teacher given: using the embedded MNIST LeNet-5 teacher ({EMBEDDED_TEACHER.name})")
    teacher_arch = teacher_arch or r.get("teacher_arch")
    t = load_teacher(teacher, parse_shape(input_shape or r.get("input_shape")), teacher_arch, trust_pickle,
                     teacher_backend, teacher_output, teacher_timeout)
    if t.note:
        console.print(f"teacher {t.path.name}: {t.note}")
    mean, std = _preprocessing(t.path, parse_floats(mean, "--mean") or r.get("mean"),
                               parse_floats(std, "--std") or r.get("std"))
    if (mean is None) != (std is None) or (mean and len(mean) != t.input_shape[0]):
        raise EdgekdError(f"give --mean and --std together, one value per input channel ({t.input_shape[0]})")
    asked = method or r.get("method", "auto")
    method = resolve_method(asked, t.access)
    if asked == "auto" and "gradients" not in t.access:
        console.print(f"method auto -> {method}: the teacher can only be queried ({t.backend}, {t.output} out)")
    asked = student or r.get("student") or ("lenet5_half" if t.input_shape[0] == 1 else "resnet20")
    from .students import resolve_student
    student = resolve_student(asked, t.input_shape)
    if student != asked:
        console.print(f"student {asked} -> {student} for {'x'.join(map(str, t.input_shape))}")
    settings = run.resolve_settings(method, r.get("settings", {}), _settings(overrides))
    eval_data = eval_data or r.get("eval_data")
    eval_set = None
    if eval_data:
        eval_set = load_dataset(eval_data, "test")
        check_matches(eval_set, t.input_shape)
    if iterations is None and time_budget is None:
        iterations, time_budget = r.get("iterations"), r.get("time_budget_minutes")
        if iterations is None and time_budget is None:
            iterations = 2000
    name = str(t.path).replace(":", "-") if t.format == "callable" else t.path.stem
    out = Path(out or f"runs/{name}-{student}-{method}")
    if ranks.main:
        run.prepare_out_dir(out, force)
    config = run.new_config(
        t, student=student, method=method, settings=settings, budget=run.Budget(iterations, time_budget),
        eval_data=eval_data, mean=mean, std=std, device=device or "auto", seed=seed or 0,
        precision=precision or r.get("precision", "auto"), compile=compile_,
        checkpoint_every=parse_period(checkpoint_every or r.get("checkpoint_every"), "--checkpoint-every",
                                      (200, 5.0)),
        eval_every=parse_period(eval_every or r.get("eval_every"), "--eval-every", (100, None)),
        recipe=str(recipe) if recipe else None,
        teacher_arch=teacher_arch, max_queries=max_queries or r.get("max_queries"), teacher_timeout=teacher_timeout)
    console.print(f"teacher {t.path.name}: {t.format} in {t.backend}, input {'x'.join(map(str, t.input_shape))}, "
                  f"{t.num_classes} classes, {t.output} out, {len(t.bn_nodes)} BatchNorm layers")
    console.print(f"method {method}, student {student}, run directory {out}")
    try:
        _report(run.distill(t, config, out, eval_set, show_progress=not no_progress, log=console.print,
                            ranks=ranks), out)
    finally:
        ranks.close()


def _quiet_unless_main(ranks):
    """Under torchrun only rank 0 talks; the others still report their errors (main())."""
    console.quiet = not ranks.main


ERROR_DIR = "EDGEKD_ERROR_DIR"


def _launch_torchrun(nproc: int):
    """`edgekd distill --nproc N ...`: the same command on N local processes under torchrun
    (its standalone rendezvous), as `torchrun --standalone --nproc-per-node N -m edgekd ...`."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args, given = [], iter(sys.argv[1:])
    for arg in given:
        if arg == "--nproc":
            next(given, None)  # and its value
        elif not arg.startswith("--nproc="):
            args.append(arg)
    # Each CPU process gets an equal share of the cores (the torchrun command would give each one).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"edgekd-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures get one line below
    # The processes leave their errors here (main()) and this one prints one of them: whichever
    # process fails first, the agent stops the others, perhaps before they could print.
    with tempfile.TemporaryDirectory(prefix="edgekd-errors-") as errors:
        os.environ[ERROR_DIR] = errors  # for the processes it starts
        try:
            elastic_launch(config, sys.executable)("-m", "edgekd", *args)
        except ChildFailedError as e:
            reported = sorted(Path(errors).iterdir(), key=lambda f: int(f.name))
            if reported:
                raise EdgekdError(reported[0].read_text()) from None
            rank, failure = min(e.failures.items())
            raise EdgekdError(f"process {rank} of {nproc} stopped (exit code {failure.exitcode}); "
                              "run without --nproc to see why") from None
        finally:
            del os.environ[ERROR_DIR]


def parse_period(value, name: str, default: tuple) -> tuple:
    """'N' iterations or 'Mmin' minutes of training -> (N, None) or (None, M); None -> default."""
    if value is None:
        return default
    text = str(value).strip().lower()
    try:
        if text.endswith("min"):
            minutes = float(text[:-3])
            if minutes > 0:
                return None, minutes
        elif int(text) >= 1:
            return int(text), None
    except ValueError:
        pass
    raise EdgekdError(f"{name} takes a number of iterations (e.g. 200) or of minutes (e.g. 5min), not '{value}'")


def _resume(out: Path, iterations, time_budget, no_progress, trust_pickle):
    import yaml

    from . import distill as run
    from .data import load_dataset
    from .distributed import Ranks
    from .teacher import load_teacher

    config_path = out / "config.yaml"
    if not config_path.is_file():
        raise EdgekdError(f"{out} is not an edgekd run directory (no config.yaml)")
    config = yaml.safe_load(config_path.read_text())
    ranks = Ranks.from_env(run.device_type(config["device"]))
    _quiet_unless_main(ranks)
    if iterations is not None or time_budget is not None:  # a resumed run may be given a new budget
        config["iterations"], config["time_budget_minutes"] = iterations, time_budget
    tc = config["teacher"]
    backend = "runtime" if tc.get("backend", "torch") != "torch" and tc["format"] == "onnx" else "auto"
    t = load_teacher(tc["path"], tc["input_shape"], tc["arch"], trust_pickle, backend, tc.get("output", "auto"),
                     tc.get("timeout", 60.0))
    if t.sha256 != tc["sha256"]:
        raise EdgekdError(f"teacher {tc['path']} changed since the run started (sha256 differs)")
    eval_set = load_dataset(config["eval_data"], "test") if config["eval_data"] else None
    try:
        _report(run.distill(t, config, out, eval_set, resume=True, show_progress=not no_progress,
                            log=console.print, ranks=ranks), out)
    finally:
        ranks.close()


def _report(summary, out):
    if not summary:  # ranks other than 0
        return
    table = Table(title=f"distilled into {out}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)


@cli.command("eval")
@click.argument("model", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="labelled data (idx, CIFAR bin, ImageFolder, .npz)")
@click.option("--split", type=click.Choice(["test", "train"]), default="test")
@click.option("--limit", type=click.IntRange(1), help="evaluate the first N samples")
@click.option("--teacher-arch", help="zoo architecture of a plain state_dict")
@click.option("--input-shape", help="C,H,W when the model file does not say")
@click.option("--mean", help="normalisation mean (default: what the model or its run directory records)")
@click.option("--std", help="normalisation std")
@click.option("--trust-pickle", is_flag=True)
@teacher_access_options
@device_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def eval_(model, data, split, limit, teacher_arch, input_shape, mean, std, trust_pickle, teacher_backend,
          teacher_output, teacher_timeout, device, as_json):
    """Top-1 accuracy of MODEL (teacher or student file, or a run directory) on real data."""
    import yaml

    from .data import check_matches, load_dataset
    from .evaluate import top1
    from .teacher import load_teacher, parse_shape

    path = Path(model)
    run_config = (path if path.is_dir() else path.parent) / "config.yaml"
    if path.is_dir():
        path = path / "student.pt2"
    m = load_teacher(path, parse_shape(input_shape), teacher_arch, trust_pickle, teacher_backend, teacher_output,
                     teacher_timeout)
    mean, std = _preprocessing(m.path, parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    if mean is None and run_config.is_file():  # a student from a run takes its teacher's inputs
        pre = yaml.safe_load(run_config.read_text())["preprocessing"]
        mean, std = pre["mean"], pre["std"]
    ds = load_dataset(data, split, limit)
    check_matches(ds, m.input_shape)
    from .distill import normaliser, pick_device
    device = pick_device(device or "auto")
    acc = top1(m.to(device), ds, normaliser({"preprocessing": {"mean": mean, "std": std}}), device)
    result = {"model": str(m.path), "data": ds.source, "samples": len(ds), "top1": acc}
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(f"{m.path.name}: top-1 {acc:.2f} % on {len(ds)} samples of {ds.source}")


@cli.group()
def teacher():
    """Inspect or train teachers."""


@teacher.command("info")
@click.argument("path", type=click.Path())
@click.option("--teacher-arch", help="zoo architecture of a plain state_dict")
@click.option("--input-shape", help="C,H,W when the file does not say")
@click.option("--trust-pickle", is_flag=True)
@teacher_access_options
@click.option("--json", "as_json", is_flag=True)
def teacher_info(path, teacher_arch, input_shape, trust_pickle, teacher_backend, teacher_output, teacher_timeout,
                 as_json):
    """Format, input shape, classes, size, MACs, BatchNorm layers and usable methods."""
    from .methods import resolve_method, usable_methods
    from .teacher import FORMATS, load_teacher, parse_shape, read_metadata

    t = load_teacher(path, parse_shape(input_shape), teacher_arch, trust_pickle, teacher_backend, teacher_output,
                     teacher_timeout)
    info = {"path": str(t.path), "format": t.format, "format_description": FORMATS[t.format][1],
            "backend": t.backend, "access": "gradients" if "gradients" in t.access else "queries only",
            "output": t.output, "note": t.note,
            "input_shape": list(t.input_shape), "num_classes": t.num_classes, "params": t.params,
            "macs": t.macs, "batchnorm_layers": len(t.bn_nodes), "features": t.feature_dim or None,
            "batch_one_only": t.batch_one, "preprocessing": read_metadata(t.path) or None,
            "methods": usable_methods(t.access), "auto_method": resolve_method("auto", t.access),
            "sha256": t.sha256}
    if as_json:
        click.echo(json.dumps(info))
        return
    table = Table(show_header=False, title=f"teacher {t.path.name}")
    for key, value in info.items():
        table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    console.print(table)


@teacher.command("train")
@click.option("--data", required=True, type=click.Path(), help="labelled training data")
@click.option("--arch", required=True, help="architecture from the zoo (see `edgekd students`)")
@click.option("--out", required=True, type=click.Path(), help="output .pt2 file")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=float, default=0.05, show_default=True, help="SGD learning rate (cosine schedule)")
@click.option("--mean", help="normalisation mean to apply before the model (recorded in the file)")
@click.option("--std", help="normalisation std")
@click.option("--seed", type=int, default=0)
@device_option
@click.option("--force", is_flag=True, help="replace an existing output file")
def teacher_train(data, arch, out, epochs, batch_size, lr, mean, std, seed, device, force):
    """Train a teacher on real data (for recipes, tests and the embedded default)."""
    from .distill import pick_device
    from .train_teacher import train_teacher

    if Path(out).exists() and not force:
        raise EdgekdError(f"{out} exists; pass --force to replace it")
    result = train_teacher(data, arch, Path(out), epochs, batch_size, lr, parse_floats(mean, "--mean"),
                           parse_floats(std, "--std"), seed, pick_device(device or "auto"), log=console.print)
    console.print(f"wrote {out}: test top-1 {result['test_top1']} %" if result.get("test_top1") is not None
                  else f"wrote {out}")


@cli.command()
@click.option("--input-shape", default="3,32,32", show_default=True, help="C,H,W to build the students for")
@click.option("--classes", type=click.IntRange(2), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def students(input_shape, classes, as_json):
    """List the student architectures with parameters and MACs, and the family names that
    stand for one of them."""
    from .students import FAMILIES, describe_students, resolve_student
    from .teacher import parse_shape

    shape = parse_shape(input_shape)
    rows = describe_students(shape, classes)
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table(title=f"students for {input_shape.replace(',', 'x')}, {classes} classes")
    for col in ("name", "params", "MMACs"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e6:.2f}")
    console.print(table)
    console.print(f"family names for {input_shape.replace(',', 'x')}: "
                  + ", ".join(f"{family} -> {resolve_student(family, shape)}" for family in FAMILIES))


@cli.command()
def methods():
    """List the distillation methods and what each needs from the teacher."""
    from .methods import AUTO_ORDER, METHODS

    table = Table(title="methods (auto picks the first usable, in this order)")
    for column in ("name", "needs from the teacher", "paper", "edgekd additions (not in the paper)"):
        table.add_column(column)
    for name in AUTO_ORDER:
        cls = METHODS.get(name)
        paper = sys.modules[cls.__module__].__doc__.split(":")[0].strip()
        table.add_row(name, ", ".join(sorted(cls.needs)) or "its outputs only (queries)", paper, cls.additions)
    console.print(table)


from .probe.command import devices, probe  # noqa: E402
from .report import report  # noqa: E402

cli.add_command(devices)
cli.add_command(probe)
cli.add_command(report)


from .export.command import export  # noqa: E402
cli.add_command(export)


def main():
    # A shell that starts edgekd in the background ignores SIGINT for it, and Python keeps that;
    # restore Ctrl-C (and treat `kill` the same way) so an interrupted run always checkpoints.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    try:
        cli.main(standalone_mode=False)
    except EdgekdError as e:
        if os.environ.get(ERROR_DIR) and "RANK" in os.environ:  # under --nproc the launcher prints it, once
            Path(os.environ[ERROR_DIR], os.environ["RANK"]).write_text(str(e))
        elif os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 speaks for every process
            click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("EDGEKD_DEBUG"):
            raise
        msg = str(e).strip().splitlines()
        click.echo(f"error: unexpected {type(e).__name__}: {msg[0] if msg else ''} "
                   "(set EDGEKD_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
