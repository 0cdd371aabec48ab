"""`edgekd teacher train`: an ordinary supervised training run, to make teachers for recipes,
tests and the embedded default (edgekd itself never needs the data a teacher was trained on)."""
import time

import torch
import torch.nn.functional as F

from .data import check_matches, load_dataset
from .distillation import normaliser, seed_everything
from .errors import EdgekdError
from .evaluate import top1
from .students import create_student
from .teacher import save_export


def train_teacher(data, arch, out, epochs, batch_size, lr, mean, std, seed, device=torch.device("cpu"),
                  log=print) -> dict:
    seed_everything(seed)
    train = load_dataset(data, "train")
    try:
        test = load_dataset(data, "test")
        check_matches(test, train.x.shape[1:])
    except EdgekdError:
        test = None
    c, h, w = train.x.shape[1:]
    num_classes = int(train.y.max()) + 1
    model = create_student(arch, c, num_classes, (h, w)).to(device)
    normalise = normaliser({"preprocessing": {"mean": mean, "std": std}})
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * -(-len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train))
        for i in range(0, len(train), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(normalise(train.x[idx].to(device))), train.y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        acc = top1(model, test, normalise, device) if test is not None else None
        log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, test top-1 {acc} % "
            f"({time.perf_counter() - start:.0f} s)")
    save_export(model.cpu(), (c, h, w), out, {"mean": mean, "std": std, "arch": arch,
                                       "class_names": train.class_names, "test_top1": acc})
    return {"test_top1": acc}
