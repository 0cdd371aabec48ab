"""The synthetic data pool (the memory bank of CMI, Fast-DFKD and NAYER).

Every synthesis round adds the batch the teacher judged to the pool; the student trains from the
pool, so an image that cost a pass through the teacher's backward is used many times instead of
once. Images are kept as uint8 in [0, 255] (a quarter of float32, and what a device sees), with the
teacher's logits on them and, for conditional generators, the label they were made for.

Eviction: first in, first out. Once `capacity` images are held, each new one replaces the oldest,
because the generators improve as they train and the oldest images are the worst.
"""
import math

import torch
import torch.nn.functional as F

from .fileio import torch_save

NO_LABEL = -1


def entry_bytes(image_shape, num_classes: int) -> int:
    """Memory one pooled image takes: its uint8 pixels, its float32 logits, its int64 label."""
    return math.prod(image_shape) + 4 * num_classes + 8


class Pool:
    def __init__(self, capacity: int, image_shape, num_classes: int):
        self.capacity = capacity
        self.images = torch.zeros(capacity, *image_shape, dtype=torch.uint8)
        self.logits = torch.zeros(capacity, num_classes)
        self.labels = torch.full((capacity,), NO_LABEL, dtype=torch.long)
        self.added = 0  # images ever added; the next write goes to added % capacity

    def __len__(self) -> int:
        return min(self.added, self.capacity)

    def add(self, pixels: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None = None):
        """pixels: (B, C, H, W) in [0, 1]; logits: the teacher's on exactly these images."""
        pixels, logits = pixels[-self.capacity:], logits[-self.capacity:]
        slots = (torch.arange(len(pixels)) + self.added) % self.capacity
        self.images[slots] = pixels.detach().clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
        self.logits[slots] = logits.detach().float().cpu()
        self.labels[slots] = labels.cpu()[-self.capacity:] if labels is not None else NO_LABEL
        self.added += len(pixels)

    def sample(self, n: int, rng: torch.Generator | None = None):
        """n random entries (with replacement): (pixels in [0, 1], cached logits, labels)."""
        idx = torch.randint(0, len(self), (n,), generator=rng)
        return self.images[idx].float().div_(255), self.logits[idx], self.labels[idx]

    def class_histogram(self) -> list[int]:
        """How many held images the teacher puts in each class (argmax of its logits)."""
        return torch.bincount(self.logits[:len(self)].argmax(1), minlength=self.logits.shape[1]).tolist()

    def state_dict(self) -> dict:
        n = len(self)
        # A full pool is saved as it is: a copy would double its memory for the time of the save.
        held = (lambda t: t) if n == self.capacity else (lambda t: t[:n].clone())
        return {"images": held(self.images), "logits": held(self.logits), "labels": held(self.labels),
                "added": self.added}

    def load_state_dict(self, state: dict):
        n = len(state["images"])
        self.images[:n], self.logits[:n], self.labels[:n] = state["images"], state["logits"], state["labels"]
        self.added = state["added"]

    def save(self, path):
        torch_save(path, self.state_dict())


def augment(x: torch.Tensor, crop_padding: int, flip: bool, rng: torch.Generator | None = None):
    """Random crop after zero padding by `crop_padding` pixels and random horizontal flip, drawn
    per sample; differentiable, so synthesis can judge its images through the same views."""
    b, _, h, w = x.shape
    drawn_on = rng.device if rng is not None else x.device
    if crop_padding:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=rng, device=drawn_on).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=rng, device=drawn_on).to(x.device)
        rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
        cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
        x = padded[torch.arange(b, device=x.device).view(b, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        flipped = torch.rand(b, generator=rng, device=drawn_on).to(x.device) < 0.5
        x = torch.where(flipped.view(b, 1, 1, 1), x.flip(3), x)
    return x.contiguous()
