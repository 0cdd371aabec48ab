"""The analytical TFLite Micro arena against the arena TFLite Micro itself allocates.

For the four MLPerf Tiny reference models, the float ResNet-8, and the embedded LeNet-5 as edgekd
exports it (float and int8 .tflite), prints the arena edgekd computes from the file (its copy of
TFLM's greedy planner plus its model of the persistent allocations) next to the one TFLite
Micro's own interpreter records on this host (the `tflite-micro` package, reference kernels), and
writes benchmarks/results/mcu_arena.json. Usage: python benchmarks/mcu_arena.py [extra.tflite ...]
"""
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekd.fileio import write_json
from edgekd.probes import mcu
from edgekd.probes.mcu_latency import MLPERF_MODELS
from edgekd.probes.tflite import read_tflite

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))


def exported_lenet5(folder: Path) -> list[Path]:
    subprocess.run([sys.executable, "-m", "edgekd.cli", "export", str(ROOT / "edgekd/assets/mnist_lenet5.pt2"),
                    "--tflite", "--int8", "--out", str(folder / "export"), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return sorted((folder / "export").glob("*.tflite"))


def main():
    models = [SHARED / "reference-models/mlperf-tiny" / f for f in MLPERF_MODELS.values()]
    models.append(SHARED / "reference-models/mlperf-tiny-ic/pretrainedResnet.tflite")
    with tempfile.TemporaryDirectory() as tmp:
        models += exported_lenet5(Path(tmp)) + [Path(p) for p in sys.argv[1:]]
        rows = []
        for path in models:
            m = read_tflite(path)
            planned = mcu.greedy_arena(mcu.lifetimes(m, {}))
            estimated = planned + mcu.persistent_bytes(m)
            measured = mcu.measured_arena(path)
            if measured is None:
                sys.exit("tflite-micro is not installed: pip install -e .[mcu]")
            rows.append({"model": path.name, "planned_bytes": planned, "estimated_bytes": estimated,
                         "measured_bytes": measured, "error_pct": round(100 * (estimated / measured - 1), 2)})
    print(f"{'model':34} {'planned':>9} {'estimated':>10} {'TFLM':>9} {'error':>7}")
    for r in rows:
        print(f"{r['model']:34} {r['planned_bytes']:>9,} {r['estimated_bytes']:>10,} {r['measured_bytes']:>9,} "
              f"{r['error_pct']:>+6.2f}%")
    write_json(ROOT / "benchmarks/results/mcu_arena.json",
               {"date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
                "measured_with": "tflite-micro (TFLite Micro's Python interpreter, RecordingMicroAllocator, 64-bit host)",
                "rows": rows})


if __name__ == "__main__":
    main()
