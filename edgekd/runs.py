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


def int8_tflite_of(run: Path) -> Path:
    """The int8 TFLite file `edgekd export` wrote for a run: what a device probe wants."""
    files = sorted((run / "export").glob("*.int8.tflite"))
    if not files:
        raise EdgekdError(f"{run} has no int8 TFLite file yet: run `edgekd export {run} --tflite` first")
    return files[0]
