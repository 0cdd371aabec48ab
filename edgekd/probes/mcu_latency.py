"""Microcontroller latency models fitted on published MLPerf Tiny results.

A model's cycles on one (core, runtime, version) are

    cost per MAC of standard convolutions x their MACs
  + cost per MAC of depthwise convolutions x their MACs
  + cost per MAC of pointwise convolutions and fully connected layers x their MACs
  + cost per output element (requantisation and stores, and all of an elementwise or pooling op) x outputs
  + cycles per op x ops (dispatch and per-layer set-up),

and latency = cycles / the board's clock, so one fit serves any clock of the same core. The
costs are fitted on that runtime's published latencies of the four MLPerf Tiny reference models
(`published_latency.csv` in ../shared), by non-negative least squares on relative errors. The
cycles per op are one value for every runtime, fitted on the whole table (`fit_per_op`): three
or four networks per runtime cannot separate a per-op cost from the others, thirty runtimes
can. Four
networks do not pin down four costs that well (only the image classifier has many standard
convolutions, only the autoencoder many fully connected MACs), so the three MAC costs are pulled
towards one another (a ridge of weight RIDGE): a class the data says little about costs what the
others do. `validate` measures how well this predicts a network left out of the fit
(leave-one-model-out) and a board left out (leave-one-board-out, where a runtime has several);
what is left out is left out of the per-op fit too, in every runtime.
"""
import csv
import functools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import EdgekdError
from .tflite import op_macs, op_precision, read_tflite

CLASSES = ("conv", "depthwise", "pointwise")
FREE_OPS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}  # views: no work on a microcontroller
PER_OP_GRID = range(0, 60_001, 1_000)  # the cycles per op fit_per_op chooses from
RIDGE = 1.0
# Every fitted row is an int8 model; float32 ops (no CMSIS-NN kernels, software or FPU floats)
# are assumed to cost this many times their int8 MAC and output costs. Not fitted.
FLOAT32_FACTOR = 3.0
# The published models and the benchmark names the table uses for them.
MLPERF_MODELS = {"ic": "pretrainedResnet_quant.tflite", "kws": "kws_ref_model.tflite",
                 "vww": "vww_96_int8.tflite", "ad": "ad01_int8.tflite"}
# The runtimes fitted: int8 results of these runtimes (what edgekd exports for microcontrollers).
FITTED_RUNTIMES = ("TensorFlow Lite Micro", "X-CUBE-AI")
TARGET_CORES = ("Cortex-M4F", "Cortex-M7", "Cortex-M33")  # the accuracy target covers these
FITS = Path(__file__).resolve().parents[1] / "assets" / "mcu_latency_fits.json"


def op_features(model, op) -> dict:
    """The work of one op in the model's terms: MACs of its class and output elements."""
    if op.name in FREE_OPS:
        return {}
    macs = op_macs(model, op)
    feats = {"outputs": model.tensors[op.outputs[0]].elements} if op.outputs else {}
    if op.name == "DEPTHWISE_CONV_2D":
        feats["depthwise"] = macs
    elif op.name in ("CONV_2D", "TRANSPOSE_CONV") and model.tensors[op.inputs[1]].shape[1:3] != (1, 1):
        feats["conv"] = macs
    elif macs:
        feats["pointwise"] = macs
    return feats


def op_cycles(model, op, costs: dict) -> float:
    work = _work(costs, op_features(model, op))
    return work * (FLOAT32_FACTOR if op_precision(model, op) == "float32" else 1.0) + costs["per_op"]


def features(model) -> dict:
    total = defaultdict(float, ops=len(model.ops))
    for op in model.ops:
        for key, value in op_features(model, op).items():
            total[key] += value
    return dict(total)


def _row(feats: dict) -> np.ndarray:
    return np.array([feats.get(c, 0.0) for c in CLASSES] + [feats.get("outputs", 0.0)])


def _work(costs: dict, feats: dict) -> float:
    """Cycles of the MACs and output elements in `feats`, without the per-op cost."""
    return float(_row(feats) @ np.array([costs[c] for c in (*CLASSES, "per_output")]))


def cycles(costs: dict, feats: dict) -> float:
    """Cycles of a whole model from its features()."""
    return _work(costs, feats) + costs["per_op"] * feats.get("ops", 0)


def fit(samples: list, per_op: float) -> dict:
    """Costs from (features, cycles) pairs, given the cycles per op: non-negative least squares on
    relative error, the three MAC costs pulled together (RIDGE, relative to the samples' mean
    cycles per MAC)."""
    from scipy.optimize import nnls

    a = np.array([_row(f) for f, _ in samples])
    y = np.array([c - per_op * f.get("ops", 0) for f, c in samples])
    weight = 1 / np.array([c for _, c in samples])
    per_mac = sum(c for _, c in samples) / a[:, :3].sum()
    pulls = []
    for i in range(3):
        for j in range(i + 1, 3):
            pull = np.zeros(4)
            pull[i], pull[j] = 1 / per_mac, -1 / per_mac
            pulls.append(pull)
    solution = nnls(np.vstack([a * weight[:, None], np.sqrt(RIDGE) * np.array(pulls)]),
                    np.concatenate([y * weight, np.zeros(len(pulls))]))[0]
    return {**{c: round(float(v), 4) for c, v in zip((*CLASSES, "per_output"), solution)}, "per_op": float(per_op)}


def fit_per_op(runtimes: list) -> float:
    """The cycles per op, one value for every runtime: the one of PER_OP_GRID whose per-runtime
    fits leave the least squared relative error over all their samples (`runtimes`: one list of
    (features, cycles) pairs per runtime)."""
    def squared_error(per_op) -> float:
        total = 0.0
        for samples in filter(None, runtimes):
            costs = fit(samples, per_op)
            total += sum((cycles(costs, f) / c - 1) ** 2 for f, c in samples)
        return total

    return float(min(PER_OP_GRID, key=squared_error))


def runtime_key(row: dict) -> str:
    return " / ".join(filter(None, (row["core"], row["runtime"], row["runtime_version"])))


def published(csv_path) -> dict:
    """{runtime key: [(benchmark, board, round, clock MHz, cycles)]} for the int8 results of the
    fitted runtimes in the table."""
    table = defaultdict(list)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"core", "runtime", "runtime_version", "processor", "round", "clock_mhz", "benchmark",
                   "latency_ms"} - set(reader.fieldnames or [])
        if missing:
            raise EdgekdError(f"{csv_path} lacks the columns {', '.join(sorted(missing))} of published_latency.csv")
        for row in reader:
            if not any(row["runtime"].startswith(r) for r in FITTED_RUNTIMES) or "fp32" in row["runtime"] \
                    or row["benchmark"] not in MLPERF_MODELS:
                continue
            mhz = float(row["clock_mhz"])
            table[runtime_key(row)].append((row["benchmark"], row["processor"], row["round"], mhz,
                                            float(row["latency_ms"]) * mhz * 1e3))
    return dict(table)


def validate(csv_path, models_dir) -> dict:
    """Fits every runtime in the table and cross-validates it. Returns {"runtimes": {key: {costs,
    fitted_on, leave_one_model_out: {benchmark: [error % of each of its rows]}, leave_one_board_out:
    {board: [error %]}, error_range_pct}}, "summary": ...}; an error is (predicted - published) / published."""
    absent = [file for file in MLPERF_MODELS.values() if not (Path(models_dir) / file).is_file()]
    if absent:
        raise EdgekdError(f"the MLPerf Tiny models {', '.join(absent)} must sit beside {Path(csv_path).name}")
    feats = {name: features(read_tflite(Path(models_dir) / file)) for name, file in MLPERF_MODELS.items()}
    # Runtimes published on too few networks to fit four costs, or to check them, are left out.
    table = {key: rows for key, rows in sorted(published(csv_path).items()) if len({b for b, *_ in rows}) >= 3}

    def fitted(keep) -> dict:
        """Each runtime's costs fitted on its rows `keep` accepts, the cycles per op on all of them."""
        samples = {key: [(feats[row[0]], row[4]) for row in rows if keep(row)] for key, rows in table.items()}
        per_op = fit_per_op(list(samples.values()))
        return {key: fit(s, per_op) for key, s in samples.items() if s}

    def errors(costs: dict, rows) -> list:
        return [round(100 * (cycles(costs, feats[b]) / c - 1), 1) for b, _, _, _, c in rows]

    without_model = {held: fitted(lambda row, held=held: row[0] != held) for held in MLPERF_MODELS}
    several_boards = {board for rows in table.values() if len({r[1] for r in rows}) > 1 for _, board, *_ in rows}
    without_board = {held: fitted(lambda row, held=held: row[1] != held) for held in sorted(several_boards)}
    full = fitted(lambda row: True)
    runtimes = {}
    for key, rows in table.items():
        lomo = {held: errors(without_model[held][key], [r for r in rows if r[0] == held])
                for held in sorted({b for b, *_ in rows})}
        boards = sorted({board for _, board, *_ in rows})
        lobo = {held: errors(without_board[held][key], [r for r in rows if r[1] == held])
                for held in boards if len(boards) > 1}
        spread = [e for held in (lomo, lobo) for errs in held.values() for e in errs]
        runtimes[key] = {
            "costs": full[key],
            "fitted_on": sorted({f"MLPerf Tiny {rnd} {board} at {mhz:g} MHz" for _, board, rnd, mhz, _ in rows}),
            "benchmarks": sorted({b for b, *_ in rows}),
            "leave_one_model_out": lomo, "leave_one_board_out": lobo,
            "error_range_pct": [min(spread), max(spread)] if spread else None,
        }
    target = [e for key, r in runtimes.items() if key.split(" / ")[0] in TARGET_CORES
              for errs in r["leave_one_model_out"].values() for e in errs]
    summary = {"target_runtimes": "int8 TFLite Micro and X-CUBE-AI on " + ", ".join(TARGET_CORES),
               "predictions": len(target),
               "median_abs_error_pct": round(float(np.median(np.abs(target))), 1) if target else None,
               "max_abs_error_pct": round(float(np.max(np.abs(target))), 1) if target else None,
               "within_40_pct": sum(abs(e) <= 40 for e in target),
               "per_op_cycles": {"all rows": next(iter(full.values()))["per_op"] if full else None,
                                 **{f"without {held}": next(iter(fits.values()))["per_op"]
                                    for held, fits in without_model.items() if fits}}}
    return {"runtimes": runtimes, "summary": summary}


@functools.cache
def load_fits() -> dict:
    return json.loads(FITS.read_text())["runtimes"]


def runtime_model(runtime: dict) -> dict:
    """A profile runtime's costs, cross-validated error range and provenance: the shipped fit of
    its core and runtime (`fit:`, with a `note` where the board is another one), or a fit of
    another core or runtime whose costs it borrows (`borrow:`, uncalibrated: its `calibration`
    says why)."""
    key = runtime.get("fit") or runtime.get("borrow")
    fits = load_fits()
    if key not in fits:
        raise EdgekdError(f"no fitted latency model '{key}' (known: {'; '.join(sorted(fits))})")
    f = fits[key]
    if "borrow" in runtime:
        return {"costs": f["costs"], "error_range_pct": None, "calibration": runtime["calibration"]}
    text = f"fitted on {'; '.join(f['fitted_on'])} ({', '.join(f['benchmarks'])})"
    if f["error_range_pct"]:
        low, high = f["error_range_pct"]
        text += f"; cross-validated error {low:+.0f} to {high:+.0f} %"
    return {"costs": f["costs"], "error_range_pct": f["error_range_pct"],
            "calibration": text + (f"; {runtime['note']}" if runtime.get("note") else "")}


def latency_range(estimate_ms: float, error_range_pct) -> dict:
    """The latency the cross-validated errors allow: a prediction that erred by e % was
    published / (1 + e / 100), so the published figure lies between these two."""
    if not error_range_pct:
        return {}
    low_error, high_error = error_range_pct
    return {"low": round(estimate_ms / (1 + high_error / 100), 2), "high": round(estimate_ms / (1 + low_error / 100), 2)}
