"""DAFL (Chen et al., ICCV 2019): the teacher is a fixed discriminator. The generator is pushed to
make inputs the teacher classifies confidently (one-hot), with strong penultimate activations,
and with balanced classes over the batch; the student distils the teacher on those inputs."""
import torch.nn.functional as F

from . import METHODS
from .base import Method, Synthesis, negative_entropy_of_mean


@METHODS.register("dafl")
class DAFL(Method):
    needs = {"gradients", "features"}
    # The paper's loss weights; its lr_G of 0.2 at batch 512 collapses the generator at the
    # CPU-sized batch of the common defaults. recipes/dafl-*.yaml restore every published setting.
    defaults = {"lr_generator": 1e-2, "w_onehot": 1.0, "w_entropy": 5.0, "w_activation": 0.1}

    def generator_step(self, iteration, student_training):
        x, _ = self.generate(iteration)
        out = self.teacher.run(x)
        losses = {"onehot": F.cross_entropy(out.logits, out.logits.argmax(1)),
                  "entropy": negative_entropy_of_mean(out.logits),
                  "activation": -out.features.abs().mean()}
        loss_g = (self.s["w_onehot"] * losses["onehot"] + self.s["w_entropy"] * losses["entropy"]
                  + self.s["w_activation"] * losses["activation"])
        losses["generator"] = self.update_generators(loss_g)
        return Synthesis(x.detach(), out.logits.detach(), None, losses)
