"""Inputs made from a model alone, by optimising pixels (no generator, no data).

Each batch starts as uniform noise in [0, 1] and is optimised so that every BatchNorm input's
batch statistics match the running statistics stored in the layer (ZeroQ, Cai et al. 2020), and,
with `class_targets`, so that the model puts each sample in a preset class (classes spread evenly
over the samples). Export calibration uses the first; distillation's fidelity probe set, which
must not depend on any method's generator, uses both.
"""
import torch
import torch.nn.functional as F

# Statistics are matched per batch of 64 images up to 32 x 32 pixels, and of as many pixels for
# larger ones (at least 2 images): 64 images of 224 x 224 through a MobileNetV2's backward took
# over 9 GB, where 2 hold as many positions per channel as 64 of CIFAR's.
BATCH, BATCH_PIXELS = 64, 64 * 32 * 32


def invert(model, n: int, to_model, seed: int, steps: int, class_targets: bool = False,
           progress=None) -> torch.Tensor:
    """n images in [0, 1] for `model`, an edgekd Teacher (its BatchNorm nodes are known);
    `to_model` maps [0, 1] images to the model's inputs (normalisation)."""
    stats = [(m.detach(), v.detach()) for m, v in model.bn_stats]
    device = model.device
    rng = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % model.num_classes
    batch = min(BATCH, max(2, BATCH_PIXELS // (model.input_shape[1] * model.input_shape[2])))
    batches = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        # Statistics need a batch; a lone last sample is synthesized with a partner and dropped.
        x = torch.rand(max(size, 2), *model.input_shape, generator=rng).to(device).requires_grad_(True)
        y = targets[start:start + max(size, 2)].to(device)
        opt = torch.optim.Adam([x], lr=0.05)
        for step in range(steps):
            out = model.run(to_model(x), bn=bool(stats))
            loss = F.cross_entropy(out.logits, y[:len(x)]) if class_targets else 0.0
            for h, (mean, var) in zip(out.bn_inputs, stats):
                dims = [0] + list(range(2, h.dim()))
                loss = loss + ((h.mean(dims) - mean) ** 2).mean() + \
                    ((h.var(dims, unbiased=False).add(1e-5).sqrt() - var.add(1e-5).sqrt()) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            if progress:
                progress(start // batch * steps + step + 1, -(-n // batch) * steps)
        batches.append(x.detach()[:size])
    return torch.cat(batches)
