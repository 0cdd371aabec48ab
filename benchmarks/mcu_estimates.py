"""Microcontroller estimates against every published figure in shared/README.md.

Prints a table and writes benchmarks/results/mcu_estimates.json. `--calibrate` also prints the
cycles-per-MAC that reproduce the figures a profile was calibrated on (how the YAML values were
derived). Usage: python benchmarks/mcu_estimates.py [--shared ../shared] [--calibrate]
"""
import argparse
import os
from pathlib import Path

from edgekd.devices import load_profile
from edgekd.fileio import write_json
from edgekd.probe import mcu
from edgekd.probe.tflite import read_tflite

ROOT = Path(__file__).resolve().parents[1]
# (device profile, runtime, published inferences/s, source, used to calibrate that profile?)
PUBLISHED = [
    ("nucleo-l4r5zi", "tflm-reference", 1.420, "MLPerf Tiny v0.5 reference submission, TFLite Micro", True),
    ("nucleo-l4r5zi", "x-cube-ai", 4.407, "MLPerf Tiny v1.0, STMicroelectronics X-CUBE-AI", True),
    ("stm32h7", "x-cube-ai", 18.401, "MLPerf Tiny v1.0, STMicroelectronics X-CUBE-AI (NUCLEO-H7A3ZI-Q)", False),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shared", default=os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))
    p.add_argument("--calibrate", action="store_true")
    args = p.parse_args()
    model = Path(args.shared) / "reference-models/mlperf-tiny-ic/pretrainedResnet_quant.tflite"
    rows = []
    for device, runtime, ips, source, calibrated in PUBLISHED:
        r = mcu.estimate(model, load_profile(device), runtime)
        published = 1000 / ips
        estimate = r["latency_ms"]["estimate"]
        rows.append({"device": device, "runtime": runtime, "published_ms": round(published, 1),
                     "estimated_ms": estimate, "error_pct": round(100 * (estimate - published) / published, 1),
                     "independent": not calibrated, "source": source, "fits": r["fits"],
                     "ram_bytes": r["ram_bytes"], "flash_bytes": r["flash_bytes"],
                     "unsupported_ops": len(r["unsupported_ops"])})
    print(f"MLPerf Tiny ResNet-8 int8 ({r['macs'] / 1e6:.2f} M MACs)")
    print(f"{'device':15} {'runtime':15} {'published':>10} {'estimate':>10} {'error':>7}  check")
    for row in rows:
        print(f"{row['device']:15} {row['runtime']:15} {row['published_ms']:>8.1f}ms {row['estimated_ms']:>8.1f}ms "
              f"{row['error_pct']:>+6.1f}%  {'independent' if row['independent'] else 'calibration figure (not independent)'}")
    if args.calibrate:
        m = read_tflite(model)
        macs = sum(mcu.op_macs(m, op) for op in m.ops)
        for device, runtime, ips, _, calibrated in PUBLISHED:
            if not calibrated:
                continue
            rt = dict(load_profile(device)["runtimes"][runtime], cycles_per_mac={"default": 0.0})
            other = sum(mcu.op_cycles(m, op, rt) for op in m.ops)
            clock = load_profile(device)["cpu"]["clock_hz"]
            print(f"calibration {device}/{runtime}: cycles_per_mac = ({clock / ips / 1e6:.2f} M cycles - "
                  f"{other / 1e6:.2f} M non-MAC cycles) / {macs / 1e6:.2f} M MACs = {(clock / ips - other) / macs:.3f}")
    write_json(ROOT / "benchmarks/results/mcu_estimates.json", {"model": str(model), "rows": rows})


if __name__ == "__main__":
    main()
