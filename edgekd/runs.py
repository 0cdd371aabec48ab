"""Which run a command means when it names none: the most recent one under ./runs, where
`edgekd distill` puts them."""
from pathlib import Path

from .errors import EdgekdError

RUNS = Path("runs")


def latest_run() -> Path:
    """The run directory under ./runs written to last."""
    runs = [p for p in RUNS.iterdir() if (p / "config.yaml").is_file()] if RUNS.is_dir() else []
    if not runs:
        raise EdgekdError("no run under ./runs to use: name a run directory or a model file")
    return max(runs, key=lambda run: max(f.stat().st_mtime for f in run.iterdir()))


def run_or_latest(given, log) -> Path:
    """`given`, or the latest run (saying so)."""
    if given is not None:
        return Path(given)
    run = latest_run()
    log(f"using the latest run, {run}")
    return run


def int8_model_of(run: Path) -> Path:
    """The int8 model `edgekd export` wrote for a run, what a device probe wants: the TFLite file,
    else the ONNX one (when litert-torch is not installed)."""
    for suffix in (".tflite", ".onnx"):
        files = sorted((run / "export").glob(f"*.int8{suffix}"))
        if files:
            return files[0]
    raise EdgekdError(f"{run} has no int8 model yet: run `edgekd export {run}` first")
