"""CGDD, Conditional Generative Data-free KD: a conditional generator G(z, y) is trained so the
teacher classifies G(z, y) as the preset label y (so any class can be asked for), plus an
adversarial term that seeks inputs where teacher and student disagree. The student learns the
teacher's logits and, through a learned projection, its penultimate feature map."""
import torch.nn.functional as F
from torch import nn

from . import METHODS
from .base import Method, discrepancy, kd_loss


@METHODS.register("cgdd")
class CGDD(Method):
    needs = set()  # logits suffice; features, when the teacher exposes them, add feature KD
    conditional = True
    defaults = {"lr_generator": 1e-2, "w_label": 1.0, "w_adv": 1.0, "w_feature": 1.0}

    def extra_modules(self):
        if self.teacher.feature_node is None:
            return {}
        return {"projection": nn.Linear(self.student.num_features, self.teacher.feature_dim)}

    def step(self, iteration):
        x, labels = self.generate(iteration)
        t_logits, t_features, _ = self.teacher.run(x)
        loss_label = F.cross_entropy(t_logits, labels)
        loss_adv = -discrepancy(self.student(x), t_logits)
        loss_g = self.s["w_label"] * loss_label + self.s["w_adv"] * loss_adv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"label": loss_label.item(), "adv": -loss_adv.item(),
                **self.train_student(iteration, x, t_logits, t_features)}

    def student_update(self, x, teacher_logits, teacher_features=None):
        features = self.student.forward_features(x)
        loss_kd = kd_loss(self.student.classifier(features), teacher_logits, self.s["temperature"])
        # Relative to the teacher features' energy, so the weight means the same for any teacher.
        loss_feature = (F.mse_loss(self.extra["projection"](features), teacher_features)
                        / teacher_features.pow(2).mean().clamp_min(1e-6)
                        if teacher_features is not None else features.new_zeros(()))
        loss = loss_kd + self.s["w_feature"] * loss_feature
        self.opt_s.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_s.step()
        return {"kd": loss_kd.item(), "feature": loss_feature.item()}
