"""Teachers behind a Python callable, as `edgekd distill query_teacher:NAME` loads them: the
embedded MNIST LeNet-5 run by plain torch, answering with probabilities or labels, and the ways a
user's callable can be broken. Every call appends its batch size to $QUERY_LOG when set, so a
test can count the queries the teacher really received."""
import os
import time
from pathlib import Path

import numpy as np
import torch

EMBEDDED = Path(__file__).resolve().parents[1] / "edgekd" / "assets" / "mnist_lenet5.pt2"
_model = torch.export.load(str(EMBEDDED)).module()


def _log(n: int):
    if os.environ.get("QUERY_LOG"):
        with open(os.environ["QUERY_LOG"], "a") as f:
            f.write(f"{n}\n")


def probabilities(x: np.ndarray) -> np.ndarray:
    _log(len(x))
    with torch.no_grad():
        return torch.softmax(_model(torch.from_numpy(x)), 1).numpy()


probabilities.input_shape = (1, 28, 28)


def labels(x: np.ndarray) -> np.ndarray:
    _log(len(x))
    with torch.no_grad():
        return _model(torch.from_numpy(x)).argmax(1).numpy()


labels.num_classes = 10


def raises(x):
    raise ConnectionError("model server unreachable")


def wrong_shape(x):
    return np.zeros((len(x), 10, 2), np.float32)


def nan(x):
    return np.full((len(x), 10), np.nan, np.float32)


def slow(x):
    time.sleep(30)
    return np.zeros((len(x), 10), np.float32)
