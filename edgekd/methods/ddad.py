"""DDAD, Dual Discriminator Adversarial Distillation (Zhao et al.): the teacher judges the
generator twice, through its BatchNorm statistics (inputs must look like its training data) and,
with the student, through an adversarial term (inputs where the two disagree most). The student
then minimises that disagreement."""
from . import METHODS
from .base import Method, bn_statistics_loss, discrepancy, negative_entropy_of_mean


@METHODS.register("ddad")
class DDAD(Method):
    needs = {"bn"}
    defaults = {"lr_generator": 1e-2, "w_bn": 1.0, "w_adv": 1.0, "w_entropy": 5.0}

    def step(self, iteration):
        x, _ = self.generate(iteration)
        t_logits, _, bn_inputs = self.teacher.run(x, with_bn=True)
        loss_bn = bn_statistics_loss(bn_inputs, self.teacher.bn_stats)
        loss_adv = -discrepancy(self.student(x), t_logits)
        loss_entropy = negative_entropy_of_mean(t_logits)
        loss_g = self.s["w_bn"] * loss_bn + self.s["w_adv"] * loss_adv + self.s["w_entropy"] * loss_entropy
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"bn": loss_bn.item(), "adv": -loss_adv.item(), "entropy": loss_entropy.item(),
                **self.train_student(iteration, x, t_logits, None)}
