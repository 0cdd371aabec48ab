"""Generators that turn noise (and, for conditional ones, a class label) into teacher inputs, and
procedural images that need no training."""
import math

import torch
import torch.nn.functional as F
from torch import nn

OUTPUTS = ("sigmoid", "tanh_bn")


class Generator(nn.Module):
    """DAFL's generator (Chen et al. 2019): linear -> 128 x H/4 x W/4, two upsample + conv blocks.

    `output="tanh_bn"` is DAFL's own ending: tanh, then a BatchNorm without affine, i.e.
    standardised outputs fed to the teacher as they are. edgekd knows the teacher's
    preprocessing, so by default (`"sigmoid"`) the generator draws images in [0, 1], normalised
    with the teacher's mean and std: samples stay valid images (the students see what a device
    will, and the pool stores them exactly), and the generator cannot hide the teacher's evidence
    in out-of-range pixels.

    `num_classes > 0` makes it conditional (CGDD): the noise is multiplied by a learned embedding
    of the requested label, as in conditional GANs, so one generator can produce any chosen class.

    Images larger than 32 px get more upsample + conv blocks (one per doubling), so that the
    linear layer always projects to at most 8 x 8 pixels: at 224 px, DAFL's fixed two blocks would
    project to 56 x 56 x width (26 million weights at width 32), and the 2x upsampling that
    makes every pixel from its neighbours would not reach across the image.
    """

    source_name = "samples of the run's generator"  # what export calibration says it drew from

    def __init__(self, latent_dim: int, image_shape, width: int = 128, num_classes: int = 0,
                 mean=None, std=None, output: str = "sigmoid"):
        super().__init__()
        channels, height, width_px = image_shape
        self.latent_dim, self.image_shape, self.num_classes = latent_dim, tuple(image_shape), num_classes
        self.output = output
        doublings = max(2, math.ceil(math.log2(max(height, width_px) / 8)))
        self.init_size = (-(-height // 2 ** doublings), -(-width_px // 2 ** doublings))
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        self.project = nn.Linear(latent_dim, width * self.init_size[0] * self.init_size[1])
        self.width = width
        # eps=0.8 in the hidden BatchNorms is DAFL's own setting (it stabilises early training).
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            *(layer for _ in range(doublings - 1) for layer in (
                nn.Upsample(scale_factor=2),
                nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, eps=0.8), nn.LeakyReLU(0.2))),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2, eps=0.8),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, padding=1),
            *((nn.Sigmoid(),) if output == "sigmoid" else (nn.Tanh(), nn.BatchNorm2d(channels, affine=False))),
        )
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(1, -1, 1, 1))

    def forward(self, z, labels=None):
        if self.label_embedding is not None:
            z = z * self.label_embedding(labels)
        x = self.project(z).view(z.shape[0], self.width, *self.init_size)
        x = self.body(x)
        if x.shape[-2:] != self.image_shape[1:]:  # sizes that are not a multiple of 4
            x = F.interpolate(x, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std if self.output == "sigmoid" else x

    def settings(self) -> dict:
        """What load_generators needs to build it again (its weights aside)."""
        return {"kind": "dafl", "latent_dim": self.latent_dim, "width": self.width, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "output": self.output}

    def sample(self, n: int, generator: torch.Generator | None = None):
        """n fresh inputs (with their labels for a conditional generator, else None), the noise
        drawn on the generator's own device (no host-to-device copy) unless a seeded
        torch.Generator elsewhere is given."""
        device = self.project.weight.device
        drawn_on = generator.device if generator is not None else device  # a seeded generator draws alike anywhere
        z = torch.randn(n, self.latent_dim, generator=generator, device=drawn_on).to(device)
        labels = (torch.randint(0, self.num_classes, (n,), generator=generator, device=drawn_on).to(device)
                  if self.num_classes else None)
        return self(z, labels), labels


class ProceduralImages(nn.Module):
    """Images from two procedural models of natural-image statistics, nothing trained: half dead
    leaves (discs and squares of random colours occluding one another, their radii from 1.5
    pixels to half the image, most of them small: Lee, Mumford & Huang 2001), half noise with a
    1/f^a power spectrum (a from 1 to 2.5) in random colours (Baradad et al. 2021, "Learning to
    See by Looking at Noise"). The same `sample` as Generator, so that distillation, export
    calibration and the report draw from either alike."""

    SHAPES = 40  # leaves per image
    source_name = "the run's procedural images (dead leaves, 1/f noise)"

    def __init__(self, image_shape, mean=None, std=None):
        super().__init__()
        self.image_shape = tuple(image_shape)
        channels = image_shape[0]
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(1, -1, 1, 1))

    def settings(self) -> dict:
        return {"kind": "procedural", "image_shape": list(self.image_shape)}

    def sample(self, n: int, generator: torch.Generator | None = None):
        """n images, normalised as the teacher takes them, and no labels."""
        rng = {"generator": generator, "device": generator.device if generator is not None else self.mean.device}
        leaves = n // 2
        pixels = torch.cat([self.dead_leaves(leaves, rng), self.spectral_noise(n - leaves, rng)]).to(self.mean.device)
        return ((pixels - self.mean) / self.std).contiguous(memory_format=torch.channels_last), None

    def dead_leaves(self, n: int, rng: dict) -> torch.Tensor:
        c, h, w = self.image_shape
        ys, xs = torch.meshgrid(torch.arange(h, device=rng["device"]), torch.arange(w, device=rng["device"]),
                                indexing="ij")
        image = torch.rand(n, c, 1, 1, **rng).expand(n, c, h, w)
        largest = max(h, w) / 2
        for _ in range(self.SHAPES):
            x0, y0 = torch.rand(n, 1, 1, **rng) * w, torch.rand(n, 1, 1, **rng) * h
            radius = 1.5 + (largest - 1.5) * torch.rand(n, 1, 1, **rng) ** 3
            disc = ((xs - x0) ** 2 + (ys - y0) ** 2).sqrt()
            square = torch.maximum((xs - x0).abs(), (ys - y0).abs())
            inside = torch.where(torch.rand(n, 1, 1, **rng) < 0.5, disc, square) < radius
            image = torch.where(inside[:, None], torch.rand(n, c, 1, 1, **rng), image)
        return image

    def spectral_noise(self, n: int, rng: dict) -> torch.Tensor:
        c, h, w = self.image_shape
        fy = torch.fft.fftfreq(h, device=rng["device"]).view(-1, 1)
        fx = torch.fft.rfftfreq(w, device=rng["device"]).view(1, -1)
        frequency = (fx ** 2 + fy ** 2).sqrt().clamp(min=1 / max(h, w))
        exponent = 1 + 1.5 * torch.rand(n, 1, 1, 1, **rng)
        shape = (n, c, h, w // 2 + 1)
        spectrum = torch.complex(torch.randn(shape, **rng), torch.randn(shape, **rng)) / math.sqrt(2)
        noise = torch.fft.irfft2(spectrum / frequency ** exponent, s=(h, w))
        noise = noise - noise.mean((2, 3), keepdim=True)
        noise = noise / (noise.std((1, 2, 3), keepdim=True) + 1e-8)
        # Channels mixed by a random matrix: colours that vary together, as in photographs.
        mixing = 0.3 * torch.randn(n, c, c, **rng) + torch.eye(c, device=rng["device"]) * torch.rand(n, 1, 1, **rng)
        noise = torch.einsum("nij,njhw->nihw", mixing, noise)
        return (0.5 + 0.2 * noise + 0.2 * (torch.rand(n, c, 1, 1, **rng) - 0.5)).clamp(0, 1)


def load_generators(path) -> list[nn.Module]:
    """The generators a run saved in generator.pt (see distill.finalise)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    generators = []
    for weights in state["state_dicts"]:
        if state.get("kind") == "procedural":
            g = ProceduralImages(state["image_shape"])
        else:
            g = Generator(state["latent_dim"], state["image_shape"], state["width"], state["num_classes"],
                          output=state.get("output", "sigmoid"))
        # mean and std are buffers, restored by load_state_dict
        g.load_state_dict(weights)
        generators.append(g)
    return generators
