"""Calibration samples without data: inputs for the quantizers' range estimation.

All samples are images in [0, 1] (N, C, H, W), the space the exported models take, so the
quantizers see exactly what a device will feed. They come from, in order of preference:
  1. real images (`--calib PATH`), the reference;
  2. the run's trained generator(s), which produce inputs the teacher classifies confidently
     (or, for a run of the procedural method, its procedural images);
  3. inputs synthesized from the model's own BatchNorm statistics (ZeroQ, Cai et al. 2020):
     a batch is optimised until the mean and variance of every BatchNorm input match the
     running statistics stored in the layer, i.e. the activation ranges real data would produce;
  4. for a model without BatchNorm, inputs synthesized from its outputs: optimised until the
     model puts each in a preset class, the classes spread evenly (DAFL's confident and
     class-balanced outputs), so every class's activation ranges are seen.
"""
import torch

from ..data import load_dataset
from ..errors import EdgekdError
from ..inversion import invert

# Optimisation steps per synthesized batch. On the CIFAR-10 ResNet-20 (1,000 test images, float
# 91.5 %), 25 steps gave int8 ONNX / TFLite 91.6 / 91.5 % and 100 steps 91.3 / 91.7 %, at a third
# of the time (51 s against 146 s for the whole export on 2 cores).
SYNTH_STEPS = 25


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


def synthesize(model, n: int, to_model, seed: int, steps: int = SYNTH_STEPS) -> tuple[torch.Tensor, str]:
    """n inputs made from the model alone (3. or 4. above), and how they were made.

    `model` is a loaded edgekd Teacher (BN nodes known); `to_model` maps [0, 1] images to the
    model's input space (normalisation). Optimised in pixel space so every sample stays a valid
    image."""
    if model.bn_nodes:
        return invert(model, n, to_model, seed, steps), "synthesized from the model's BatchNorm statistics"
    return (invert(model, n, to_model, seed, steps, class_targets=True),
            "synthesized for confident, class-balanced outputs (the model has no BatchNorm)")
