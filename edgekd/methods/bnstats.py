"""Large-Scale Generative Data-Free Distillation (Luo et al. 2020): generators learn to make inputs
whose BatchNorm-input statistics inside the teacher match the running statistics stored in it,
with a class-balance term; an ensemble of generators keeps the substitute data diverse."""
import torch.nn.functional as F

from . import METHODS
from .base import Method, bn_statistics_loss, negative_entropy_of_mean


@METHODS.register("bnstats")
class BNStats(Method):
    needs = {"bn"}
    defaults = {"num_generators": 2, "lr_generator": 1e-2,
                "w_bn": 1.0, "w_onehot": 0.5, "w_entropy": 5.0}

    def step(self, iteration):
        x, _ = self.generate(iteration)
        t_logits, _, bn_inputs = self.teacher.run(x, with_bn=True)
        loss_bn = bn_statistics_loss(bn_inputs, self.teacher.bn_stats)
        loss_onehot = F.cross_entropy(t_logits, t_logits.argmax(1))
        loss_entropy = negative_entropy_of_mean(t_logits)
        loss_g = (self.s["w_bn"] * loss_bn + self.s["w_onehot"] * loss_onehot
                  + self.s["w_entropy"] * loss_entropy)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"bn": loss_bn.item(), "onehot": loss_onehot.item(), "entropy": loss_entropy.item(),
                **self.train_student(iteration, x, t_logits, None)}
