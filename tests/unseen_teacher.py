"""A teacher architecture edgekd has never seen (not in its zoo), trained briefly on real MNIST
and saved as TorchScript: the black box the distillation tests and benchmarks start from.

    python tests/unseen_teacher.py OUT.ts     # one epoch on all 60k MNIST images (~30 s)
"""
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import load_dataset


class StrangeNet(nn.Module):
    """Strided convolutions instead of pooling, a two-branch head: nothing like edgekd's zoo."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.down1 = nn.Sequential(nn.Conv2d(12, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(24, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.hidden = nn.Linear(32 * 7 * 7 + 24, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        a = self.down1(self.stem(x))
        b = self.down2(a)
        joined = torch.cat([b.flatten(1), a.mean((2, 3))], 1)
        return self.head(torch.relu(self.hidden(joined)))


def make_unseen_mnist_teacher(mnist_dir, path, epochs=1, seed=0, limit=None) -> tuple[nn.Module, float]:
    """Trains StrangeNet on (the first `limit` images of) MNIST, saves it with torch.jit.trace;
    returns the model and its test top-1 (%)."""
    torch.manual_seed(seed)
    train, test = load_dataset(mnist_dir, "train", limit), load_dataset(mnist_dir, "test")
    model = StrangeNet()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(train))
        for i in range(0, len(train), 128):
            idx = order[i:i + 128]
            loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(test.x).argmax(1) == test.y).float().mean().item() * 100
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 1, 28, 28)), str(path))
    return model, acc


if __name__ == "__main__":
    data = Path(os.environ.get("EDGEKD_DATA", Path(__file__).resolve().parents[2] / "shared"))
    _, accuracy = make_unseen_mnist_teacher(data / "datasets" / "mnist", sys.argv[1])
    print(f"wrote {sys.argv[1]}: MNIST test top-1 {accuracy:.2f} %")
