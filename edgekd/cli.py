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


def _settings(pairs) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise EdgekdError(f"--set takes KEY=VALUE, not '{pair}'")
        import yaml
        out[key.strip()] = yaml.safe_load(value)
    return out


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
@click.option("--out", type=click.Path(), help="run directory to create (default runs/<teacher>-<student>-<method>)")
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
@click.option("--eval-every", metavar="N|Mmin", help="iterations (N) or minutes (e.g. 2min) between evaluations [100, or 2 minutes, whichever first]")
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
    from . import api

    if nproc and nproc > 1:
        return _launch_torchrun(nproc)
    summary = api.distill(
        teacher, student=student, method=method, recipe=recipe, out=out, iterations=iterations,
        time_budget=time_budget, eval_data=eval_data, max_queries=max_queries, mean=mean, std=std,
        settings=_settings(overrides), device=device, precision=precision, compile=compile_, seed=seed,
        checkpoint_every=checkpoint_every, eval_every=eval_every, force=force, resume=resume,
        progress=not no_progress, log=console.print, teacher_arch=teacher_arch, input_shape=input_shape,
        trust_pickle=trust_pickle, teacher_backend=teacher_backend, teacher_output=teacher_output,
        teacher_timeout=teacher_timeout)
    if summary:  # rank 0 (the others return {})
        _show_table(f"distilled into {summary['run_dir']}", summary)


@cli.command("run")
@click.argument("teacher", required=False, type=click.Path())
@click.option("--device", "target", default="host", show_default=True,
              help="device to probe the int8 model on: a profile (see `edgekd devices`) or a .yaml file")
@click.option("--student", help="student architecture or family (see `edgekd students`)")
@click.option("--method", help="see `edgekd methods` [auto]")
@click.option("--recipe", type=click.Path(), help="YAML recipe of the distillation")
@click.option("--out", type=click.Path(), help="run directory (default runs/<teacher>-<student>-<method>)")
@click.option("--iterations", type=click.IntRange(1), help="stop distilling after N iterations")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), help="stop distilling after MINUTES")
@click.option("--eval-data", type=click.Path(), help="real labelled data: top-1 of the student and of its int8 file")
@click.option("--max-queries", type=click.IntRange(1), help="most teacher samples to query in training")
@click.option("--mean", help="teacher normalisation mean per channel")
@click.option("--std", help="teacher normalisation std per channel")
@click.option("--seed", type=int, help="random seed [0]")
@click.option("--train-device", metavar="auto|cpu|cuda|cuda:N", help="where to distil and calibrate [auto]")
@click.option("--host", help="ssh target of the device: user@address or an ~/.ssh/config alias")
@click.option("--port", type=click.IntRange(1, 65535), help="ssh port")
@click.option("--identity", type=click.Path(), help="ssh private key")
@click.option("--ssh-config", type=click.Path(), help="ssh client config file (ssh -F)")
@click.option("--serial", help="adb device serial [$ANDROID_SERIAL]")
@click.option("--runtime", help="microcontroller runtime from the profile")
@click.option("--teacher-arch", help="zoo architecture of a plain state_dict teacher")
@click.option("--input-shape", help="C,H,W when the teacher file does not say")
@click.option("--trust-pickle", is_flag=True, help="allow loading a pickled module (runs code from the file)")
@teacher_access_options
@click.option("--force", is_flag=True, help="redo every stage, replacing the run directory")
@click.option("--no-progress", is_flag=True, help="plain log lines instead of a progress bar")
@click.option("--json", "as_json", is_flag=True, help="print only the final result, as JSON")
def run_chain(teacher, target, student, method, recipe, out, iterations, time_budget, eval_data, max_queries, mean,
              std, seed, train_device, host, port, identity, ssh_config, serial, runtime, teacher_arch, input_shape,
              trust_pickle, teacher_backend, teacher_output, teacher_timeout, force, no_progress, as_json):
    """The whole chain for TEACHER (the embedded MNIST teacher when omitted): distill, export,
    probe on --device, report. Stages the run directory already holds are skipped and an
    interrupted distillation resumes, so the same command picks up where a run stopped."""
    from . import api
    from .probes import latency_text

    r = api.run(teacher, device=target, student=student, method=method, recipe=recipe, out=out,
                iterations=iterations, time_budget=time_budget, eval_data=eval_data, max_queries=max_queries,
                mean=mean, std=std, seed=seed, train_device=train_device, force=force,
                progress=not (no_progress or as_json), log=(lambda *a, **k: None) if as_json else console.print,
                host=host, port=port, identity=identity, ssh_config=ssh_config, serial=serial, runtime=runtime,
                teacher_arch=teacher_arch, input_shape=input_shape, trust_pickle=trust_pickle,
                teacher_backend=teacher_backend, teacher_output=teacher_output, teacher_timeout=teacher_timeout)
    if as_json:
        click.echo(json.dumps(r))
        return
    table = Table(title=f"{r['run_dir']}: {r['student']} distilled with {r['method']}", show_header=False)
    table.add_row("int8 model", f"{r['model']} ({r['size_bytes'] / 1024:.1f} KiB)")
    # The same rows for every teacher and device: what was not measured says so.
    top1 = [f"{what} {r[key]:.2f} %" for key, what in (("int8_top1", "int8"), ("student_top1", "float student"),
                                                        ("teacher_top1", "teacher")) if r[key] is not None]
    table.add_row("top-1 on real data", ", ".join(top1) or "not measured (pass --eval-data)")
    table.add_row(f"latency on {r['device']}", latency_text(r["latency_ms"]))
    fits = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "not estimated (no memory limits in the profile)"}
    table.add_row("fits", fits[r["fits"]])
    table.add_row("stages", ", ".join(f"{stage} {what}" for stage, what in r["stages"].items()))
    table.add_row("report", r["report"])
    console.print(table)


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


def _show_table(title: str, result: dict):
    table = Table(title=title, show_header=False)
    for key, value in result.items():
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
    from .distillation import normaliser, pick_device
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
            "methods": usable_methods(t.access), "auto_method": resolve_method("auto", t.access, t.input_shape[0]),
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
    from .distillation import pick_device
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

    table = Table(title="methods (auto picks the first usable, in this order for colour teachers)",
                  caption="greyscale teachers: " + ", ".join(AUTO_ORDER["greyscale"]))
    for column in ("name", "needs from the teacher", "paper", "edgekd additions (not in the paper)"):
        table.add_column(column)
    for name in AUTO_ORDER["colour"]:
        cls = METHODS.get(name)
        paper = sys.modules[cls.__module__].__doc__.split(":")[0].strip()
        table.add_row(name, ", ".join(sorted(cls.needs)) or "its outputs only (queries)", paper, cls.additions)
    console.print(table)


from .probes.command import devices, probe  # noqa: E402
from .reporting import report  # noqa: E402

cli.add_command(devices)
cli.add_command(probe)
cli.add_command(report)


from .exporter.command import export  # noqa: E402
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
