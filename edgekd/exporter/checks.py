"""Checked, not assumed: every artifact runs in its own runtime on held-out samples and is
compared with the float model (top-1 agreement, max abs difference), on real data when given
(top-1 accuracy), and timed on this host with the probes' own harness."""
from dataclasses import dataclass

import numpy as np
import torch

LATENCY_RUNS, LATENCY_WARMUP = 30, 5


def same_answers(ours: np.ndarray, ref: np.ndarray) -> bool:
    """Whether a rewritten copy of a model answers as the file does (float rounding aside)."""
    return ours.shape == ref.shape and bool(np.abs(ours - ref).max() <= 1e-4 * (1 + np.abs(ref).max()))


@dataclass
class Reference:
    """Samples ([0, 1], NCHW) and the float model's outputs on them."""
    synthetic: np.ndarray
    synthetic_logits: np.ndarray
    eval_x: np.ndarray | None = None
    eval_y: np.ndarray | None = None
    eval_pred: np.ndarray | None = None


@torch.no_grad()
def reference(model, synthetic: torch.Tensor, eval_set=None) -> Reference:
    run = lambda x: torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy()  # noqa: E731
    ref = Reference(synthetic.numpy(), run(synthetic))
    if eval_set is not None:
        ref.eval_x, ref.eval_y = eval_set.x.numpy(), eval_set.y.numpy()
        ref.eval_pred = run(eval_set.x).argmax(1)
    return ref


def _pct(hits) -> float:
    return round(100.0 * float(np.mean(hits)), 2)


def measure(runner, ref: Reference, nhwc: bool) -> dict:
    layout = (lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1))) if nhwc else (lambda x: x)  # noqa: E731
    logits = runner(layout(ref.synthetic))
    result = {"agreement_synthetic": _pct(logits.argmax(1) == ref.synthetic_logits.argmax(1)),
              "max_abs_diff": float(np.abs(logits - ref.synthetic_logits).max()),
              "agreement_eval": None, "top1": None}
    if ref.eval_x is not None:
        pred = runner(layout(ref.eval_x)).argmax(1)
        result["agreement_eval"] = _pct(pred == ref.eval_pred)
        result["top1"] = _pct(pred == ref.eval_y)
    return result


def host_latency(path) -> float:
    """Median ms of one inference of the file on this machine, one thread: what
    `edgekd probe FILE --device host --threads 1` measures, by the same code, in this process."""
    from ..probes.runner import load_model, random_input, time_inference

    model = load_model(str(path), threads=1)
    return time_inference(model, random_input(model, 1.0), LATENCY_WARMUP, LATENCY_RUNS)["latency_ms"]["p50"]
