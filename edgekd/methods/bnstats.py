"""Large-Scale Generative Data-Free Distillation (Luo et al. 2020): generators learn to make inputs
whose BatchNorm-input statistics inside the teacher match the running statistics stored in it
(the distance between the two per-channel Gaussians, as a KL divergence), with a class-balance
term; an ensemble of generators keeps the substitute data diverse. The paper trains the
generators first and distils afterwards: `synthesis_only` = `synthesis_until` = the fraction of
the budget spent on generators alone gives that two-stage schedule."""
import torch
import torch.nn.functional as F

from . import METHODS
from .base import Method, Synthesis, batch_statistics, negative_entropy_of_mean


def gaussian_kl_loss(batch_stats, bn_stats, eps: float = 1e-5):
    """KL(N(batch mean, batch var) || N(running mean, running var)) per channel, averaged over
    the channels and the BatchNorm layers."""
    loss = 0.0
    for (mean, var), (r_mean, r_var) in zip(batch_stats, bn_stats):
        var, r_var = var + eps, r_var + eps
        loss = loss + (0.5 * (torch.log(r_var / var) + (var + (mean - r_mean) ** 2) / r_var - 1)).mean()
    return loss / max(len(batch_stats), 1)


@METHODS.register("bnstats")
class BNStats(Method):
    needs = {"gradients", "bn"}
    defaults = {"num_generators": 2, "lr_generator": 1e-2,
                "w_bn": 1.0, "w_onehot": 0.5, "w_entropy": 5.0}

    def generator_step(self, iteration, student_training):
        x, _ = self.generate(iteration)
        out = self.teacher.run(x, bn=True)
        losses = {"bn": gaussian_kl_loss(batch_statistics(out.bn_inputs), self.teacher.bn_stats),
                  "onehot": F.cross_entropy(out.logits, out.logits.argmax(1)),
                  "entropy": negative_entropy_of_mean(out.logits)}
        loss_g = (self.s["w_bn"] * losses["bn"] + self.s["w_onehot"] * losses["onehot"]
                  + self.s["w_entropy"] * losses["entropy"])
        losses["generator"] = self.update_generators(loss_g)
        return Synthesis(x.detach(), out.logits.detach(), None, losses)
