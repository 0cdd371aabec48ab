"""DDAD, Dual Discriminator Adversarial Distillation (Zhao et al. 2021): the teacher judges the
generator twice, through its BatchNorm statistics (inputs must look like its training data) and,
with the student, through an adversarial discrepancy (inputs where the two disagree most). The
student minimises that same discrepancy: the paper's minimax."""
from . import METHODS
from .base import Method, Synthesis, batch_statistics, bn_statistics_loss, discrepancy


@METHODS.register("ddad")
class DDAD(Method):
    needs = {"gradients", "bn"}
    defaults = {"lr_generator": 1e-2, "w_bn": 1.0, "w_first_bn": 1.0, "w_adv": 1.0}

    def generator_step(self, iteration, student_training):
        x, _ = self.generate(iteration)
        out = self.teacher.run(x, bn=True)
        losses = {"bn": bn_statistics_loss(batch_statistics(out.bn_inputs), self.teacher.bn_stats,
                                           self.s["w_first_bn"]),
                  "adv": discrepancy(self.student(x), out.logits)}
        losses["generator"] = self.update_generators(
            self.s["w_bn"] * losses["bn"] - self.s["w_adv"] * losses["adv"])
        return Synthesis(x.detach(), out.logits.detach(), None, losses)

    def student_loss(self, x, teacher_out, labels):
        loss = discrepancy(self.student(x), teacher_out.logits)
        return loss, {"discrepancy": loss}
