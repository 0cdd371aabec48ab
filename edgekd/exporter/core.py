"""The export pipeline: plan, calibrate, convert (float first, the reference), quantize, check,
then move the finished directory into place (a failure leaves nothing behind)."""
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..data import check_matches, load_dataset
from ..errors import EdgekdError
from ..fileio import write_json
from . import calibration, checks
from .formats import FORMATS, captured_output, plan, unsupported_op
from .source import Deployable, Source, metadata

HELD_OUT = 128  # synthetic samples the artifacts are compared on, never used for calibration
CALIB_SEED, HELD_OUT_SEED = 0, 1


def samples(source: Source, calib: str, n: int, seed: int, log, steps=calibration.SYNTH_STEPS,
            device=torch.device("cpu")):
    """(images in [0, 1] on the CPU, description): real data, the run's generators, or
    synthesis (computed on `device`)."""
    if calib != "synthetic":
        return calibration.from_data(calib, n, source.model.input_shape, seed), f"real images from {calib}"
    if source.generators:
        x = calibration.from_generators([g.to(device) for g in source.generators], n, source.to_pixels, seed)
        return x.cpu(), source.generators[0].source_name
    log(f"synthesizing {n} samples from the model alone ...")
    x, how = calibration.synthesize(source.model.to(device), n, source.to_model_space, seed, steps)
    source.model.to("cpu")  # the converters trace it on the CPU
    return x.cpu(), how


def export(source: Source, out: Path, formats: list[str], precisions: list[str], flags: set,
           calib: str = "synthetic", calib_size: int = 256, eval_data=None, force=False, log=print,
           synth_steps: int = calibration.SYNTH_STEPS, device=torch.device("cpu")) -> dict:
    out = Path(out)
    if out.exists() and not force:
        raise EdgekdError(f"output directory {out} exists; pass --force to replace it or --out DIR")
    work = plan(formats, precisions, flags)
    for name in formats:
        FORMATS[name].check_installed()
    eval_set = None
    if eval_data:
        eval_set = load_dataset(eval_data, "test")
        check_matches(eval_set, source.model.input_shape)
    # Calibration and held-out samples come from the same place with different seeds; with real
    # data, the held-out set is drawn from the samples after the calibration ones.
    if calib != "synthetic":
        both, where = samples(source, calib, calib_size + HELD_OUT, CALIB_SEED, log)
        calib_x, held_out = both[:calib_size], both[calib_size:]
    else:
        held_out, where = samples(source, calib, HELD_OUT, HELD_OUT_SEED, log, synth_steps, device)
        needs_calib = any(p == "int8" for _, p in work)
        calib_x = samples(source, calib, calib_size, CALIB_SEED, log, synth_steps, device)[0] if needs_calib else None
    calibrated = f"{len(calib_x)} {where}" if calib_x is not None else None
    nhwc = "nhwc" in flags
    ref = checks.reference(Deployable(source), held_out, eval_set)
    class_names = eval_set.class_names if eval_set is not None else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        artifacts = _convert_all(source, tmp, work, flags, calib_x, calibrated, class_names, log)
        results = []
        for fmt, precision, name in artifacts:
            impl = fmt.impl()
            m = checks.measure(impl.Runner(tmp / name), ref, nhwc and "nhwc" in fmt.flags)
            results.append({
                "path": str(out / name), "format": fmt.name, "precision": precision,
                "size_bytes": (tmp / name).stat().st_size,
                "agreement": m["agreement_eval"] if eval_set is not None else m["agreement_synthetic"],
                "top1": m["top1"], "latency_ms": checks.host_latency(tmp / name), "ops": impl.ops(tmp / name),
                "metadata": impl.read_metadata(tmp / name),
                "agreement_synthetic": m["agreement_synthetic"], "max_abs_diff": m["max_abs_diff"]})
        summary = {"agreement_on": "eval data" if eval_set is not None else f"{HELD_OUT} held-out {where}",
                   "artifacts": results}
        write_json(tmp / "export.json", summary)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _convert_all(source, tmp: Path, work, flags, calib_x, calibrated, class_names, log):
    """Float files first, for every format (a failure names the op and the formats that still
    work); then the quantized files from them. Returns (format, precision, file name)."""
    nhwc = "nhwc" in flags
    c, h, w = source.model.input_shape
    done, failed = [], {}
    for fmt in dict.fromkeys(f for f, _ in work):
        layout_nhwc = nhwc and "nhwc" in fmt.flags
        model = Deployable(source, layout_nhwc)
        example = torch.rand(2, h, w, c) if layout_nhwc else torch.rand(2, c, h, w)
        name = f"{source.name}.fp32{fmt.suffix}"
        log(f"converting to {fmt.name} (fp32) ...")
        try:
            with captured_output() as text:
                fmt.impl().export_float(model, example, tmp / name, _meta(source, fmt, "fp32", flags, None,
                                                                           class_names))
        except EdgekdError:
            raise
        except Exception as e:  # noqa: BLE001 - converters fail in many ways; explain, in one line
            detail = f"{e}\n{text[0] if text else ''}"
            failed[fmt.name] = unsupported_op(source.model.graph, detail) or str(e).strip().splitlines()[0][:200]
            continue
        done.append((fmt, "fp32", name))
    if failed:
        works = [f.name for f, _, _ in done]
        hint = (f"; {' and '.join(works)} export works: pass --{works[0]} alone" if works else "")
        raise EdgekdError("; ".join(f"cannot convert to {k}: {v}" for k, v in failed.items()) + hint)
    for fmt, precision in work:
        if precision == "fp32":
            continue
        name = f"{source.name}.{precision}{fmt.suffix}"
        log(f"quantizing {fmt.name} to {precision} ...")
        calib = calib_x if precision == "int8" else None
        if calib is not None and nhwc and "nhwc" in fmt.flags:
            calib = calib.permute(0, 2, 3, 1)
        try:
            with captured_output():
                    fmt.impl().quantize(tmp / f"{source.name}.fp32{fmt.suffix}", precision,
                                    None if calib is None else np.ascontiguousarray(calib.numpy()), tmp / name,
                                    _meta(source, fmt, precision, flags, calibrated if calib is not None else None,
                                          class_names), flags & fmt.flags)
        except Exception as e:  # noqa: BLE001
            raise EdgekdError(f"{fmt.name} {precision} quantization failed ({str(e).strip().splitlines()[0][:200]}); "
                              f"the {fmt.name} fp32 file converts: drop --{precision.split('-')[0]}") from None
        done.append((fmt, precision, name))
    return done


def _meta(source, fmt, precision, flags, calibrated, class_names):
    c, h, w = source.model.input_shape
    nhwc = "nhwc" in flags and "nhwc" in fmt.flags
    batch = 1 if fmt.name == "tflite" else -1  # -1: any batch
    shape = [batch, h, w, c] if nhwc else [batch, c, h, w]
    int8_io = precision == "int8" and "int8_io" in flags and "int8_io" in fmt.flags
    return metadata(source, fmt.name, precision, shape, "NHWC" if nhwc else "NCHW", int8_io, calibrated,
                    class_names)
