"""Generators that turn noise (and, for conditional ones, a class label) into teacher inputs."""
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
    """

    def __init__(self, latent_dim: int, image_shape, width: int = 128, num_classes: int = 0,
                 mean=None, std=None, output: str = "sigmoid"):
        super().__init__()
        channels, height, width_px = image_shape
        self.latent_dim, self.image_shape, self.num_classes = latent_dim, tuple(image_shape), num_classes
        self.output = output
        self.init_size = ((height + 3) // 4, (width_px + 3) // 4)
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        self.project = nn.Linear(latent_dim, width * self.init_size[0] * self.init_size[1])
        self.width = width
        # eps=0.8 in the hidden BatchNorms is DAFL's own setting (it stabilises early training).
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width, eps=0.8), nn.LeakyReLU(0.2),
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


def load_generators(path) -> list[Generator]:
    """The generators a run saved in generator.pt (see distill.finalise)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    generators = []
    for weights in state["state_dicts"]:
        g = Generator(state["latent_dim"], state["image_shape"], state["width"], state["num_classes"],
                      output=state.get("output", "sigmoid"))
        # mean and std are buffers, restored by load_state_dict
        g.load_state_dict(weights)
        generators.append(g)
    return generators
