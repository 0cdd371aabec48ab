"""Top-1 accuracy on real data and top-1 agreement between two models."""
import torch

from .data import iterate_batches


@torch.no_grad()
def top1(model, dataset, normalise, device="cpu", limit=None, batch_size=500) -> float:
    """Top-1 % of `model` (taking normalised inputs) on a Dataset of [0, 1] images."""
    correct = total = 0
    for x, y in iterate_batches(dataset, batch_size):
        if limit and total >= limit:
            break
        pred = model(normalise(x.to(device))).argmax(1).cpu()
        correct += (pred == y).sum().item()
        total += len(y)
    return round(100.0 * correct / total, 2)


@torch.no_grad()
def agreement(student, teacher, inputs, batch_size=256) -> float:
    """% of inputs where both models predict the same class."""
    same = 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size]
        same += (student(x).argmax(1) == teacher(x).argmax(1)).sum().item()
    return round(100.0 * same / len(inputs), 2)
