"""Distillation on procedural images: the student imitates the teacher's answers on dead leaves and
1/f noise (generators.ProceduralImages), fresh images every step, nothing synthesized by
optimisation. It asks the teacher for nothing but its outputs, one query per image.

Why: on colour photographs the generators that a teacher's outputs alone can train find little.
CIFAR-10's ResNet-56 queried through onnxruntime taught resnet20 12.2 % in 30 minutes with
dafl-zo's generator (chance: 10 %), and 34.7 % with these images (README, "Query-only
teachers", 2026-11-22); with the teacher's gradients, only condbn, which needs its BatchNorm
statistics, did better there. On greyscale digits (MNIST) dafl-zo's generator leads (97 %
after 10 minutes), so `auto` takes this method for colour teachers only (methods/__init__.py). Images from procedural models of natural-image statistics
are what Baradad et al. (2021) pre-train on; that a student distilled on them generalises to a
teacher's photographs is what the measurements above show, on one dataset."""
import torch
from torch import nn

from ..generators import ProceduralImages
from . import METHODS
from .base import Method, Synthesis


@METHODS.register("procedural")
class Procedural(Method):
    needs: set = set()  # the teacher's outputs alone
    # Measured on CIFAR-10 (README): Adam at 2e-3 decayed to zero, temperature 4 (4 and 1 gave
    # 17.3 and 17.1 % after 5 minutes at one thread).
    defaults = {"lr_student": 2e-3, "lr_schedule": "cosine", "temperature": 4.0}
    additions = "the method itself (edgekd's): no generator is trained"

    def make_generators(self, mean, std) -> nn.ModuleList:
        return nn.ModuleList([ProceduralImages(self.teacher.input_shape, mean, std)])

    @torch.no_grad()
    def generator_step(self, iteration, student_training):
        x, _ = self.generate(iteration, self.images_paid_for())
        return Synthesis(x, self.teacher(x))
