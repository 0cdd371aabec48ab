"""Calibration samples without data: inputs for the quantizers' range estimation.

All samples are images in [0, 1] (N, C, H, W), the space the exported models take, so the
quantizers see exactly what a device will feed. They come from, in order of preference:
  1. real images (`--calib PATH`), the reference;
  2. the run's trained generator(s), which produce inputs the teacher classifies confidently;
  3. inputs synthesized from the model's own BatchNorm statistics (ZeroQ, Cai et al. 2020):
     a batch is optimised until the mean and variance of every BatchNorm input match the
     running statistics stored in the layer, i.e. the activation ranges real data would produce.
"""
import torch

from ..data import load_dataset
from ..errors import EdgekdError

SYNTH_STEPS = 100  # ResNet-20: 50 steps already calibrate as well as real images
SYNTH_BATCH = 64  # ZeroQ matches statistics per batch of this size


def from_data(path, n: int, input_shape, seed: int) -> torch.Tensor:
    """n random images of a labelled dataset (its train split when it has one)."""
    from ..data import check_matches

    try:
        ds = load_dataset(path, "train")
    except EdgekdError:
        ds = load_dataset(path, "test")
    check_matches(ds, input_shape)
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return ds.x[pick]


@torch.no_grad()
def from_generators(generators, n: int, to_pixels, seed: int) -> torch.Tensor:
    """n samples spread over the generators; sampled in train mode as training did (the
    generator's last BatchNorm standardises each batch)."""
    rng = torch.Generator().manual_seed(seed)
    parts = []
    for i, g in enumerate(generators):
        g.train()
        count = n // len(generators) + (i < n % len(generators))
        if count:
            parts.append(g.sample(max(count, 2), generator=rng)[0][:count])
    return to_pixels(torch.cat(parts)).clamp(0, 1)


def from_bn_statistics(teacher, n: int, to_model, to_pixels, seed: int, steps: int = SYNTH_STEPS,
                       progress=None) -> torch.Tensor:
    """n inputs whose BatchNorm input statistics match the model's running statistics (ZeroQ).

    `teacher` is a loaded edgekd Teacher (BN nodes known); `to_model` maps [0, 1] images to the
    model's input space (normalisation), `to_pixels` back. Optimised in pixel space so every
    sample stays a valid image."""
    if not teacher.bn_nodes:
        raise EdgekdError("the model has no BatchNorm layers to synthesize calibration data from; "
                          "pass --calib PATH with a few hundred real images (or export from a run "
                          "directory, whose generator provides samples)")
    targets = [(m.detach(), v.detach()) for m, v in teacher.bn_stats]
    rng = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, n, SYNTH_BATCH):
        size = min(SYNTH_BATCH, n - start)
        # Statistics need a batch; a lone last sample is synthesized with a partner and dropped.
        x = torch.rand(max(size, 2), *teacher.input_shape, generator=rng).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.05)
        for step in range(steps):
            _, _, bn_inputs = teacher.run(to_model(x), with_bn=True)
            loss = 0.0
            for h, (mean, var) in zip(bn_inputs, targets):
                dims = [0] + list(range(2, h.dim()))
                loss = loss + ((h.mean(dims) - mean) ** 2).mean() + \
                    ((h.var(dims, unbiased=False).add(1e-5).sqrt() - var.add(1e-5).sqrt()) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            if progress:
                progress(start // SYNTH_BATCH * steps + step + 1, -(-n // SYNTH_BATCH) * steps)
        batches.append(x.detach()[:size])
    return torch.cat(batches)
