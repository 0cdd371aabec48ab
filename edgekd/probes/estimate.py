"""Latency of a board or phone that is not reachable, from the profile's documented rate:
MACs of the model / effective MACs per second for its precision (see the profile's calibration)."""
from ..errors import EdgekdError
from .mcu import greedy_arena, lifetimes
from .tflite import op_macs, op_precision, read_tflite


def estimate_rate(path, fmt, profile, method):
    how = {"ssh": "--host user@address", "adb": "--serial (and adb on PATH)"}[method]
    model_rate = profile.get("latency_model")
    if fmt != "tflite" or not model_rate:
        raise EdgekdError(f"{profile['name']} is reached over {method}: give {how} "
                          "(estimates without a device need a .tflite and a latency_model in the profile)")
    model = read_tflite(path)
    macs = {"int8": 0, "float32": 0}
    for op in model.ops:
        macs["float32" if op_precision(model, op) == "float32" else "int8"] += op_macs(model, op)
    ms = sum(macs[p] / (model_rate[f"{p}_gmacs"] * 1e9) * 1e3 for p in macs)
    return {"device": profile["name"], "kind": profile["kind"], "source": "estimated", "model": str(path),
            "format": fmt, "latency_ms": {"estimate": round(ms, 3)}, "macs": sum(macs.values()),
            "ram_bytes": model.size_bytes + greedy_arena(lifetimes(model, {})),
            "calibration": model_rate["calibration"],
            "note": f"no device given ({how}): estimated from MACs and the profile's rate"}
