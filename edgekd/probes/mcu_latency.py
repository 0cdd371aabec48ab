"""Latency models fitted on published MLPerf Tiny results and on ST's model zoo (validate_zoo,
below: Cortex-M7, M33 and A7, many networks per runtime, rebuilt by architectures.py).

A model's cycles on one (core, runtime, version) are

    cost per MAC of standard convolutions x their MACs
  + cost per MAC of depthwise convolutions x their MACs
  + cost per MAC of pointwise convolutions and fully connected layers x their MACs
  + cost per output element (requantisation and stores, and all of an elementwise or pooling op) x outputs
  + cycles per op x ops (dispatch and per-layer set-up)
  [+ cost per weight x weights, depthwise weights apart: the ST zoo fits only, ZOO_FEATURES],

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
import re
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
VALIDATION = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "device_validation.json"


def layer_features(name: str, outputs: int, macs: int, kernel: tuple, weights: int = 0) -> dict:
    """The work of one op: MACs of its class, output elements and weights (`kernel`: a
    convolution's (kh, kw)). Shared by .tflite files (op_features) and rebuilt networks
    (architectures)."""
    if name in FREE_OPS:
        return {}
    feats = {"outputs": outputs}
    if name == "DEPTHWISE_CONV_2D":
        feats["depthwise"] = macs
        feats["depthwise_weights"] = weights
    elif name in ("CONV_2D", "TRANSPOSE_CONV") and tuple(kernel) != (1, 1):
        feats["conv"] = macs
    elif macs:
        feats["pointwise"] = macs
    if weights and name != "DEPTHWISE_CONV_2D":
        feats["weights"] = weights
    return feats


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def op_features(model, op) -> dict:
    kernel = model.tensors[op.inputs[1]].shape[1:3] if op.name in ("CONV_2D", "TRANSPOSE_CONV") else ()
    outputs = model.tensors[op.outputs[0]].elements if op.outputs else 0
    weights = model.tensors[op.inputs[1]].elements if op.name in WEIGHTED_OPS else 0
    return layer_features(op.name, outputs, op_macs(model, op), kernel, weights)


def op_cycles(model, op, costs: dict) -> float:
    work = _work(costs, op_features(model, op))
    return work * (FLOAT32_FACTOR if op_precision(model, op) == "float32" else 1.0) + costs["per_op"]


def _total(per_op: list, ops: int) -> dict:
    total = defaultdict(float, ops=ops)
    for feats in per_op:
        for key, value in feats.items():
            total[key] += value
    return dict(total)


def features(model) -> dict:
    return _total([op_features(model, op) for op in model.ops], len(model.ops))


def layers_features(layers) -> dict:
    """features() of a network rebuilt by edgekd.probes.architectures."""
    # A rebuilt layer's weights: its MACs per output position (k x k x inputs x outputs for a
    # convolution, k x k x channels for a depthwise one, inputs x units for a dense layer).
    return _total([layer_features(layer.name, layer.outputs, layer.macs, layer.kernel,
                                  layer.macs * layer.channels // layer.outputs if layer.outputs else 0)
                   for layer in layers], len(layers))


# Each feature of an op and the cost a fit gives it (cycles per MAC, per output element, per
# weight). The MLPerf Tiny fits use the first four; the ST zoo fits all of them.
FEATURE_COSTS = {"conv": "conv", "depthwise": "depthwise", "pointwise": "pointwise", "outputs": "per_output",
                 "weights": "per_weight", "depthwise_weights": "per_depthwise_weight"}
MLPERF_FEATURES = ("conv", "depthwise", "pointwise", "outputs")


def _row(feats: dict, keys=MLPERF_FEATURES) -> np.ndarray:
    return np.array([feats.get(k, 0.0) for k in keys])


def _work(costs: dict, feats: dict) -> float:
    """Cycles of the MACs, output elements and weights in `feats`, without the per-op cost."""
    return float(sum(costs.get(cost, 0.0) * feats.get(feature, 0.0) for feature, cost in FEATURE_COSTS.items()))


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
    return {**{FEATURE_COSTS[k]: round(float(v), 4) for k, v in zip(MLPERF_FEATURES, solution)}, "per_op": float(per_op)}


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


# --- ST model zoo: many networks per runtime, fitted freely and left out a family at a time ---

# Rows fitted: the CPU rows of these cores (not the NPU/GPU rows, nor those using the U3C5's HSP
# accelerator); the runtimes named as the table names them (STM32Cube.AI is X-CUBE-AI's code
# generator, kept apart from MLPerf Tiny's X-CUBE-AI fits: on the same Cortex-M7 and version 8.1.0
# the zoo's MobileNet v1 0.25 at 96x96 takes 12.9 M cycles, MLPerf Tiny's 8.3 M).
ZOO_CORES = ("Cortex-M7", "Cortex-M33", "Cortex-A7")
ZOO_RUNTIMES = {"STM32Cube.AI": "STM32Cube.AI", "STEdgeAI": "STEdgeAI Core", "TensorFlow Lite": "TensorFlow Lite"}
MIN_FAMILIES = 3  # a runtime published on fewer families takes its cost shape from another core
# The audio models in ../shared (v2.0.1 files); the v4.1 rows name retrained files of the same
# architecture (the same published weight sizes), not redistributed, so these stand in for them.
ZOO_FILES = {"miniresnet1stack": "miniresnet_1stacks_64x50_tl_int8.tflite",
             "miniresnet2stack": "miniresnet_2stacks_64x50_tl_int8.tflite",
             "miniresnetv21stack": "miniresnetv2_1stacks_64x50_tl_int8.tflite",
             "miniresnetv22stack": "miniresnetv2_2stacks_64x50_tl_int8.tflite",
             "yamnet256": "yamnet_256_64x96_tl_int8.tflite"}
# Each weight counted once per layer: what a layer costs beyond its MACs to fetch and unpack its
# weights (from flash on a microcontroller) and set up per channel, depthwise layers apart since
# they do few MACs per weight. It took the leave-one-family-out median from 16.0 to 14.7 % on
# Cortex-M and from 28.4 to 20.6 % on Cortex-A (2026-12-04).
ZOO_FEATURES = tuple(FEATURE_COSTS)


def zoo_key(row: dict) -> str | None:
    """'core / runtime / version' of a table row, or None for rows not fitted. A TFLite row's
    version names X-LINUX-AI and the threads (the MP157 runs two, the MP135 has one core)."""
    core = re.search(r"Cortex-[AM]\d+", row["core"])
    runtime = next((name for prefix, name in ZOO_RUNTIMES.items() if row["runtime"].startswith(prefix)), None)
    if not core or core.group(0) not in ZOO_CORES or not runtime or "HSP" in row["execution_engine"] \
            or not row["runtime_version"]:
        return None
    version = row["runtime_version"]
    if runtime == "TensorFlow Lite":
        threads = re.match(r"(\d) CPU", row["execution_engine"])
        if not threads:
            return None
        version = f"{version.replace('TFLite ', '')}, {threads.group(1)} thread{'s' if threads.group(1) != '1' else ''}"
    return f"{core.group(0)} / {runtime} / {version}"


# Families rebuilt but kept out of the fits, and why; validate_zoo predicts their rows with the
# fits of the others. On the Cortex-M7, Tiny YOLO v2's 10.8 MiB of weights sit in external
# memory (the H747 has 2 MiB of flash), where no other zoo network's do: fitted with the rest, it
# pulled the cost per weight so that ResNet v1 8 was missed by +43 % (+24 % without it).
OUT_OF_FIT = {"Tiny YOLO v2": "10.8 MiB of weights, in external memory on the Cortex-M7"}


def zoo_published(csv_path) -> dict:
    """{runtime key: [(family, network, board, clock MHz, cycles, features)]} for the rows of
    ST's model zoo table (st_model_zoo_latency.csv) whose network edgekd rebuilds or reads."""
    from .architectures import family, rebuild

    models_dir = Path(csv_path).parent / "models"
    table = defaultdict(list)
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"model", "resolution", "dataset", "board", "core", "clock_mhz", "runtime", "runtime_version",
                   "execution_engine", "latency_ms"} - set(reader.fieldnames or [])
        if missing:
            raise EdgekdError(f"{csv_path} lacks the columns {', '.join(sorted(missing))} of st_model_zoo_latency.csv")
        for row in reader:
            key, fam = zoo_key(row), family(row["model"])
            if key is None or fam is None:
                continue
            file = ZOO_FILES.get(re.sub(r"\s", "", row["model"].lower()).rstrip("s"))
            feats = features(read_tflite(models_dir / file)) if file else \
                layers_features(rebuild(row["model"], row["resolution"], row["dataset"]))
            mhz = float(row["clock_mhz"])
            table[key].append((fam, f"{row['model']} {row['resolution']}", row["board"], mhz,
                               float(row["latency_ms"]) * mhz * 1e3, feats))
    return dict(table)


def fit_free(samples: list) -> dict:
    """Costs of a runtime published on many networks: every cost, cycles per op included, by
    non-negative least squares on relative error (columns scaled so none dominates the solver)."""
    from scipy.optimize import nnls

    a = np.array([[*_row(f, ZOO_FEATURES), f.get("ops", 0)] for f, _ in samples]) / np.array([[c] for _, c in samples])
    scale = a.max(axis=0)
    scale[scale == 0] = 1
    solution = nnls(a / scale, np.ones(len(samples)))[0] / scale
    return {c: round(float(v), 4) for c, v in zip((*FEATURE_COSTS.values(), "per_op"), solution)}


def fit_scaled(samples: list, shape: dict) -> dict:
    """Another runtime's costs times the one factor that best fits these samples (relative error)."""
    ratios = np.array([cycles(shape, f) / c for f, c in samples])
    factor = float(ratios.sum() / (ratios ** 2).sum())
    return {c: round(v * factor, 4) for c, v in shape.items()}


def validate_zoo(csv_path) -> dict:
    """Fits every runtime of ST's model zoo table and cross-validates it: leave-one-family-out
    (every width and resolution of an architecture family left out together) and
    leave-one-board-out where a runtime has several boards. A runtime with fewer than
    MIN_FAMILIES families takes the cost shape of the same runtime and version on the core with
    most families, scaled by one factor fitted on its own rows ("shape_from"); what is left out
    is left out of that shape's fit too. Errors are (predicted - published) / published, in %."""
    published = zoo_published(csv_path)
    table = {key: [row for row in rows if row[0] not in OUT_OF_FIT] for key, rows in published.items()}
    table = {key: rows for key, rows in table.items() if rows}
    families = {key: {row[0] for row in rows} for key, rows in table.items()}

    def donor(key):
        core, rest = key.split(" / ", 1)
        others = [k for k in table if k.split(" / ", 1)[1] == rest and k != key and len(families[k]) >= MIN_FAMILIES]
        return max(others, key=lambda k: len(families[k]), default=None)

    fitted_keys = [key for key in sorted(table) if len(families[key]) >= MIN_FAMILIES or donor(key)]

    def fitted(keep) -> dict:
        """Every runtime's costs from its rows `keep` accepts (none where what is kept cannot
        fit it: a free fit needs MIN_FAMILIES families, a scaled one its shape's fit)."""
        kept = {key: [row for row in table[key] if keep(row)] for key in fitted_keys}
        free = {key: fit_free([(row[5], row[4]) for row in rows]) for key, rows in kept.items()
                if len(families[key]) >= MIN_FAMILIES and len({row[0] for row in rows}) >= MIN_FAMILIES}
        return {**free, **{key: fit_scaled([(row[5], row[4]) for row in rows], free[donor(key)])
                           for key, rows in kept.items() if rows and len(families[key]) < MIN_FAMILIES
                           and donor(key) in free}}

    def errors(costs, rows) -> list:
        return [[name, board, round(100 * (cycles(costs, feats) / c - 1), 1)] for _, name, board, _, c, feats in rows]

    all_families = sorted({fam for key in fitted_keys for fam in families[key]})
    without_family = {fam: fitted(lambda row, fam=fam: row[0] != fam) for fam in all_families}
    boards = sorted({row[2] for key in fitted_keys for row in table[key]})
    without_board = {board: fitted(lambda row, board=board: row[2] != board) for board in boards}
    full = fitted(lambda row: True)
    runtimes = {}
    for key in fitted_keys:
        rows = table[key]
        lofo = {fam: errors(without_family[fam][key], [r for r in rows if r[0] == fam])
                for fam in sorted(families[key]) if key in without_family[fam]}
        key_boards = sorted({r[2] for r in rows})
        lobo = {board: errors(without_board[board][key], [r for r in rows if r[2] == board])
                for board in key_boards if len(key_boards) > 1 and key in without_board[board]}
        spread = [e[-1] for held in (lofo, lobo) for errs in held.values() for e in errs]
        runtimes[key] = {
            "costs": full[key],
            "fitted_on": sorted({f"ST model zoo {board} at {mhz:g} MHz" for _, _, board, mhz, _, _ in rows}),
            "benchmarks": sorted(families[key]),
            "shape_from": None if len(families[key]) >= MIN_FAMILIES else donor(key),
            "leave_one_family_out": lofo, "leave_one_board_out": lobo,
            "error_range_pct": [min(spread), max(spread)] if spread else None,
        }
    # The families kept out, predicted by the fits of everything else (so, left out too).
    out_of_fit = {key: {fam: errors(full[key], [r for r in rows if r[0] == fam])
                        for fam in sorted({r[0] for r in rows if r[0] in OUT_OF_FIT})}
                  for key, rows in sorted(published.items()) if key in full}
    return {"runtimes": runtimes, "summary": {core: _zoo_summary(runtimes, core) for core in ("Cortex-M", "Cortex-A")},
            "out_of_fit": {"why": OUT_OF_FIT, "errors": {key: errs for key, errs in out_of_fit.items() if errs}}}


def _zoo_summary(runtimes: dict, core: str) -> dict:
    """Median and largest |error| of the leave-one-family-out predictions on `core` runtimes,
    and each family's worst."""
    errs = [(fam, e) for key, r in runtimes.items() if key.startswith(core)
            for fam, rows in r["leave_one_family_out"].items() for e in rows]
    if not errs:
        return {}
    absolute = np.abs([e[-1] for _, e in errs])
    worst = {}
    for fam, e in errs:
        if abs(e[-1]) > abs(worst.get(fam, [0])[-1]):
            worst[fam] = e
    return {"predictions": len(errs), "median_abs_error_pct": round(float(np.median(absolute)), 1),
            "max_abs_error_pct": round(float(absolute.max()), 1), "within_40_pct": int((absolute <= 40).sum()),
            "worst_per_family": dict(sorted(worst.items()))}


@functools.cache
def load_fits() -> dict:
    """The shipped fits of both tables, by runtime key (the two tables' keys differ)."""
    fits = json.loads(FITS.read_text())
    return {**fits["runtimes"], **fits.get("st_model_zoo", {}).get("runtimes", {})}


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
    if f.get("shape_from"):
        text += f", the cost shape of {f['shape_from']} scaled by one factor"
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
