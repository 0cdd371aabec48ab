"""Latency of a board or phone that is not reachable, from its profile's latency_model: for each
precision, the model's MACs / an effective rate (`<precision>_gmacs`), plus a cost per op
(dispatch and per-layer set-up, `<precision>_us_per_op`) where the profile has one.

Where a board has published latencies of several networks, both costs are fitted on them
(`fit_boards`, by non-negative least squares on relative error) and cross-validated
leave-one-model-out; `edgekd devices --validate` prints that, and tests/test_mcu.py holds the
profiles to it. The Raspberry Pi 4 has MLPerf Tiny's v0.5 figures (LEIP 1.9.3, four networks in
int8 and float32) and an int8 MobileNetV2 (PyTorch qnnpack, ../shared/REFERENCES.md): with a
cost per op, the networks left out err by -58 to +31 % (median 24 %) in int8 and -71 to +23 %
(median 20 %) in float32; a rate alone, fitted on the same figures, by -86 to +42 % (median 42 %)
and -80 to +89 % (median 77 %): the small networks' time is mostly per-op cost. (The Cortex-A7
TFLite cost shapes of the ST model zoo, scaled by one factor, did worse on these int8 figures:
median 43 to 59 %.) Boards without such figures keep a rate alone, its source in `calibration`; the ST boards' Cortex-A7 profiles name their ST model zoo fit
instead (`fit:`, costs per op class, as microcontrollers do)."""
import csv
import re
from pathlib import Path

import numpy as np

from ..errors import EdgekdError
from .mcu import greedy_arena, lifetimes
from .mcu_latency import latency_range, op_cycles, runtime_model
from .tflite import op_macs, op_precision, read_tflite

PRECISIONS = {"int8": "int8", "fp32": "float32"}  # MLPerf Tiny's suffix -> the profile's name
# Published figures of each profile fitted: its MLPerf Tiny system, and figures from elsewhere as
# (network, input, training set, precision, milliseconds, source), the network one that
# architectures.rebuild builds.
BOARD_FIGURES = {
    "raspberry-pi-4": {"system": "raspberry_pi_4_leip_framework",
                       "other": [("MobileNet v2 1.0", "224x224x3", "ImageNet", "int8", 26.4,
                                  "PyTorch qnnpack, ../shared/REFERENCES.md")]},
}


def estimate_rate(path, fmt, profile, method):
    how = {"ssh": "--host user@address", "adb": "--serial (and adb on PATH)"}[method]
    model_rate = profile.get("latency_model")
    if fmt != "tflite" or not model_rate:
        raise EdgekdError(f"{profile['name']} is reached over {method}: give {how} "
                          "(estimates without a device need a .tflite and a latency_model in the profile)")
    model = read_tflite(path)
    if "fit" in model_rate:  # costs per op class fitted on this core and runtime (mcu_latency.py)
        fitted = runtime_model(model_rate)
        ms = sum(op_cycles(model, op, fitted["costs"]) for op in model.ops) / profile["cpu"]["clock_hz"] * 1e3
        latency = {"estimate": round(ms, 3), **latency_range(ms, fitted["error_range_pct"])}
        calibration, how_estimated = fitted["calibration"], "the costs per op class fitted for this core and runtime"
    else:
        work = {"int8": [0, 0], "float32": [0, 0]}  # MACs, ops
        for op in model.ops:
            precision = work["float32" if op_precision(model, op) == "float32" else "int8"]
            precision[0] += op_macs(model, op)
            precision[1] += 1
        latency = {"estimate": round(sum(predict_ms(model_rate, p, macs, ops) for p, (macs, ops) in work.items()), 3)}
        calibration, how_estimated = model_rate["calibration"], "the profile's costs per MAC and per op"
    return {"device": profile["name"], "kind": profile["kind"], "source": "estimated", "model": str(path),
            "format": fmt, "latency_ms": latency, "macs": sum(op_macs(model, op) for op in model.ops),
            "ram_bytes": model.size_bytes + greedy_arena(lifetimes(model, {})),
            "calibration": calibration, "note": f"no device given ({how}): estimated from {how_estimated}"}


def predict_ms(rate: dict, precision: str, macs: float, ops: int) -> float:
    return macs / (rate[f"{precision}_gmacs"] * 1e6) + ops * rate.get(f"{precision}_us_per_op", 0.0) / 1e3


def fit_rate(samples: list) -> dict:
    """{gmacs, us_per_op} from (MACs, ops, milliseconds) of published networks."""
    from scipy.optimize import nnls

    a = np.array([[macs, ops] for macs, ops, _ in samples], dtype=float) / np.array([[ms] for *_, ms in samples])
    scale = a.max(axis=0)
    scale[scale == 0] = 1
    per_mac_ms, per_op_ms = nnls(a / scale, np.ones(len(samples)))[0] / scale
    return {"gmacs": round(float(1 / (per_mac_ms * 1e6)), 3) if per_mac_ms else float("inf"),
            "us_per_op": round(float(per_op_ms * 1e3), 3)}


def _board_samples(published_csv, name: str) -> dict:
    """{precision: [(network, MACs, ops, ms, source)]} of a BOARD_FIGURES profile."""
    from .architectures import rebuild
    from .mcu_latency import CLASSES, MLPERF_MODELS, features, layers_features

    def work(feats):
        return sum(feats.get(c, 0) for c in CLASSES), feats["ops"]

    figures = BOARD_FIGURES[name]
    models_dir = Path(published_csv).parent
    work_of = {}  # benchmark -> (MACs, ops): one network's rows share its file
    samples = {}
    with open(published_csv, newline="") as f:
        for row in csv.DictReader(f):
            tag = re.fullmatch(rf"{figures['system']} \[(\w+)_(int8|fp32)\]", row["system"])
            if tag and row["benchmark"] in MLPERF_MODELS:
                # The int8 file's ops stand for both precisions (the same network).
                if row["benchmark"] not in work_of:
                    work_of[row["benchmark"]] = work(features(read_tflite(models_dir / MLPERF_MODELS[row["benchmark"]])))
                macs, ops = work_of[row["benchmark"]]
                samples.setdefault(PRECISIONS[tag.group(2)], []).append(
                    (row["benchmark"], macs, ops, float(row["latency_ms"]), f"MLPerf Tiny {row['round']} {row['runtime']}"))
    if not samples:  # a table without this board's figures
        return {}
    for network, resolution, dataset, precision, ms, source in figures["other"]:
        samples.setdefault(precision, []).append(
            (f"{network} {resolution.rsplit('x', 1)[0]}", *work(layers_features(rebuild(network, resolution, dataset))),
             ms, source))
    return samples


def fit_boards(published_csv) -> dict:
    """Every BOARD_FIGURES profile's costs per precision, fitted on all its figures, and the error
    (%) predicting each figure from the others (leave-one-model-out), with a cost per op and, for
    comparison, with a fitted rate alone; shaped as mcu_latency.validate's result."""
    runtimes, errors, alone = {}, [], []
    for name in BOARD_FIGURES:
        for precision, rows in _board_samples(published_csv, name).items():
            if len(rows) < 3:  # two costs, checked on a figure left out
                continue
            def held_out(fit) -> dict:
                result = {}
                for i, (network, macs, ops, ms, _) in enumerate(rows):
                    rate = fit([(m, o, t) for j, (_, m, o, t, _) in enumerate(rows) if j != i])
                    result[network] = [round(100 * (predict_ms({f"{precision}_{k}": v for k, v in rate.items()},
                                                               precision, macs, ops) / ms - 1), 1)]
                return result

            with_ops = held_out(fit_rate)
            rate_alone = held_out(lambda s: {"gmacs": fit_rate([(m, 0, t) for m, _, t in s])["gmacs"]})
            spread = [e for errs in with_ops.values() for e in errs]
            errors += spread
            alone += [e for errs in rate_alone.values() for e in errs]
            runtimes[f"{name} / {precision}"] = {
                "costs": fit_rate([(m, o, t) for _, m, o, t, _ in rows]),
                "fitted_on": [f"{network} {ms:g} ms ({source})" for network, _, _, ms, source in rows],
                "leave_one_model_out": with_ops, "leave_one_board_out": {},
                "rate_alone_leave_one_model_out": rate_alone, "error_range_pct": [min(spread), max(spread)]}
    if not errors:  # a table without these boards' figures
        return {"runtimes": {}, "summary": {}}
    absolute = np.abs(errors)
    summary = {"target_runtimes": f"{', '.join(BOARD_FIGURES)}, cost per MAC and per op",
               "predictions": len(errors), "median_abs_error_pct": round(float(np.median(absolute)), 1),
               "max_abs_error_pct": round(float(absolute.max()), 1), "within_40_pct": int((absolute <= 40).sum()),
               "rate_alone_median_abs_error_pct": round(float(np.median(np.abs(alone))), 1)}
    return {"runtimes": runtimes, "summary": summary}
