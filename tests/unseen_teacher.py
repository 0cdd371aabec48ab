"""A teacher architecture edgekd has never seen (not in its zoo), trained briefly on real MNIST
and saved as TorchScript: the black box the distillation tests and benchmarks start from."""
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import load_dataset


class StrangeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.down1 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Linear(64 + 32, 10)

    def forward(self, x):
        a = self.down1(self.stem(x))
        b = self.down2(a)
        pooled = torch.cat([a.mean((2, 3)), b.amax((2, 3))], 1)  # an unusual mixed pooling head
        return self.head(pooled)


def make_unseen_mnist_teacher(mnist_dir, path, epochs=1, seed=0) -> float:
    """Trains StrangeNet on MNIST, saves it with torch.jit.trace, returns its test top-1 (%)."""
    torch.manual_seed(seed)
    train, test = load_dataset(mnist_dir, "train"), load_dataset(mnist_dir, "test")
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
    return acc
