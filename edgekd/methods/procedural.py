"""Distillation on procedural images: the student imitates the teacher's answers on dead leaves and
1/f noise (generators.ProceduralImages), fresh images every step, and on small changes of the
images the teacher gave each class (ClassPopulation), nothing synthesized by optimisation. It
asks the teacher for nothing but its outputs, one query per image.

Why: on colour photographs the generators that a teacher's outputs alone can train find little.
CIFAR-10's ResNet-56 queried through onnxruntime taught resnet20 12.2 % in 30 minutes with
dafl-zo's generator (chance: 10 %), 34.7 % with fresh procedural images alone and 48.7 % with
the population (docs/benchmarks.md, "Query-only teachers", 2026-11-22); with the teacher's gradients, only
condbn, which needs its BatchNorm statistics, did better there. On greyscale digits (MNIST)
dafl-zo's generator leads (97 % after 10 minutes), so `auto` takes this method for colour
teachers only (methods/__init__.py). Images from procedural models of natural-image statistics
are what Baradad et al. (2021) pre-train on; that a student distilled on them generalises to a
teacher's photographs is what the measurements above show, on one dataset.

Why the population: the ResNet-56 puts 82 % of fresh procedural images in airplane, bird, cat or
frog and under 1 % in horse or ship, and a student taught on them alone answered automobile,
dog, horse or ship for none of CIFAR-10's test images. Searching without gradients, as
Black-Box Ripper (Barbalau et al. 2020) evolves its generator's codes, but in pixels: keep, per
class, images the teacher gave it, and ask about small changes of them, so that every class is
asked about as often."""
import torch
from torch import nn

from ..errors import EdgekdError
from ..generators import ProceduralImages
from ..pool import augment
from . import METHODS
from .base import Method, Synthesis


def mutate(parents: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """One small change of each parent: blended with its partner (5 to 25 % of it), a patch of the
    partner pasted in (10 to 30 % of each side), or shifted by up to an eighth of the image and
    perhaps mirrored. The changes are small so that most children keep their parent's class."""
    n, _, h, w = parents.shape
    device = parents.device
    blended = parents + (0.05 + 0.2 * torch.rand(n, 1, 1, 1, device=device)) * (partners - parents)
    ph = (h * (0.1 + 0.2 * torch.rand(n, 1, 1, device=device))).ceil()
    pw = (w * (0.1 + 0.2 * torch.rand(n, 1, 1, device=device))).ceil()
    y0, x0 = torch.rand(n, 1, 1, device=device) * (h - ph), torch.rand(n, 1, 1, device=device) * (w - pw)
    ys, xs = torch.arange(h, device=device).view(1, -1, 1), torch.arange(w, device=device).view(1, 1, -1)
    patch = (ys >= y0.floor()) & (ys < y0.floor() + ph) & (xs >= x0.floor()) & (xs < x0.floor() + pw)
    patched = torch.where(patch[:, None], partners, parents)
    shifted = augment(parents, max(1, min(h, w) // 8), True)
    kind = torch.randint(3, (n, 1, 1, 1), device=device)
    return torch.where(kind == 0, blended, torch.where(kind == 1, patched, shifted))


class ClassPopulation(nn.Module):
    """Up to `per_class` images per class, each one the teacher gave that class to. A new image
    the teacher gives a class takes an empty slot of it, or, once the class is full, a random one:
    the population is a moving sample of each class, not its most confident images (kept by the
    teacher's confidence, every slot held an image the teacher was 100 % sure of after 30
    minutes, and the student learnt less: docs/benchmarks.md)."""

    def __init__(self, classes: int, per_class: int, image_shape):
        super().__init__()
        # float16: half the memory and checkpoint; the children are computed in float32
        self.register_buffer("images", torch.zeros(classes, per_class, *image_shape, dtype=torch.float16))
        self.register_buffer("filled", torch.zeros(classes, per_class, dtype=torch.bool))

    @staticmethod
    def draw_slots(preferred: torch.Tensor) -> torch.Tensor:
        """A random slot of each image's class, one of its `preferred` slots (a mask per image)
        whenever it has any: a parent among the filled slots, so that a class with a few members
        has as many children as a full one; a newcomer's place among the empty ones."""
        return torch.multinomial(preferred.float() + 1e-6, 1).squeeze(1)

    def offspring(self, fresh: torch.Tensor, partners: torch.Tensor):
        """A child of a member of a random class in place of each fresh image (the fresh image
        itself where the class has no member yet)."""
        classes = torch.randint(self.filled.shape[0], (len(fresh),), device=fresh.device)
        slots = self.draw_slots(self.filled[classes])
        filled = self.filled[classes, slots]
        children = mutate(self.images[classes, slots].float(), partners)
        return torch.where(filled.view(-1, 1, 1, 1), children, fresh)

    def admit(self, images: torch.Tensor, classes: torch.Tensor):
        """Keeps each image in the class the teacher gave it."""
        slots = self.draw_slots(~self.filled[classes])
        self.images[classes, slots] = images.half()
        self.filled[classes, slots] = True


@METHODS.register("procedural")
class Procedural(Method):
    needs: set = set()  # the teacher's outputs alone
    # Measured on CIFAR-10 (docs/benchmarks.md): Adam at 2e-3 decayed to zero, temperature 4 (4 and 1 gave
    # 17.3 and 17.1 % after 5 minutes at one thread). One student step per batch: every batch
    # the student sees comes from generator_step, which keeps the population. population_share:
    # the part of each batch that is children of the population (0.75 and 0.5 measured alike,
    # 23.1 and 22.7 % after 8 minutes at one thread, with a population kept by confidence);
    # population_size: images kept, over all classes (10 classes of 32x32 colour images: 16 MB,
    # in checkpoints too).
    defaults = {"lr_student": 2e-3, "lr_schedule": "cosine", "temperature": 4.0, "student_steps": 1,
                "population_share": 0.75, "population_size": 2560}
    additions = "the method itself (edgekd's): no generator is trained"

    def __init__(self, teacher, student, settings, device, mean=None, std=None, fp16=False):
        super().__init__(teacher, student, settings, device, mean, std, fp16)
        if not 0 <= settings["population_share"] <= 1 or settings["population_size"] < 1:
            raise EdgekdError("procedural needs 0 <= population_share <= 1 and population_size >= 1")
        per_class = max(1, settings["population_size"] // teacher.num_classes)
        self.population = ClassPopulation(teacher.num_classes, per_class, teacher.input_shape).to(device)

    def make_generators(self, mean, std) -> nn.ModuleList:
        return nn.ModuleList([ProceduralImages(self.teacher.input_shape, mean, std)])

    @torch.no_grad()
    def generator_step(self, iteration, student_training):
        n = self.images_paid_for()
        children = round(n * self.s["population_share"])
        fresh, _ = self.generate(iteration, n + children)  # the last `children`: partners of the children
        grown = self.population.offspring(fresh[:children], fresh[n:])
        x = torch.cat([grown, fresh[children:n]]).contiguous(memory_format=torch.channels_last)
        logits = self.teacher(x)
        self.population.admit(x, logits.argmax(1))
        return Synthesis(x, logits)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "population": self.population.state_dict()}

    def load_state_dict(self, state: dict):
        super().load_state_dict(state)
        self.population.load_state_dict(state["population"])
