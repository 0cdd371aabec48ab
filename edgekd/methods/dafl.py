"""DAFL (Chen et al., ICCV 2019): the teacher is a fixed discriminator. The generator is pushed to
make inputs the teacher classifies confidently (one-hot), with strong penultimate activations,
and with balanced classes over the batch; the student distils the teacher on those inputs."""
import torch.nn.functional as F

from . import METHODS
from .base import Method, negative_entropy_of_mean


@METHODS.register("dafl")
class DAFL(Method):
    needs = {"features"}
    # The paper's loss weights; its lr_G of 0.2 at batch 512 collapses the generator at the
    # CPU-sized batch of the common defaults. recipes/dafl-*.yaml restore every published setting.
    defaults = {"lr_generator": 1e-2, "w_onehot": 1.0, "w_entropy": 5.0, "w_activation": 0.1}

    def step(self, iteration):
        x, _ = self.generate(iteration)
        t_logits, t_features, _ = self.teacher.run(x)
        loss_onehot = F.cross_entropy(t_logits, t_logits.argmax(1))
        loss_activation = -t_features.abs().mean()
        loss_entropy = negative_entropy_of_mean(t_logits)
        loss_g = (self.s["w_onehot"] * loss_onehot + self.s["w_entropy"] * loss_entropy
                  + self.s["w_activation"] * loss_activation)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"onehot": loss_onehot.item(), "entropy": loss_entropy.item(),
                "activation": loss_activation.item(), **self.train_student(iteration, x, t_logits, None)}
