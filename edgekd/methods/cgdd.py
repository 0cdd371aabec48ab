"""CGDD, Conditional Generative Data-free KD (Yu et al. 2021): a conditional generator G(z, y) is
trained so the teacher classifies G(z, y) as the preset label y (so any class can be asked for),
plus an adversarial term that seeks inputs where teacher and student disagree. The student
learns the teacher's logits (KD), the preset labels as ground truth (cross-entropy), and the
teacher's intermediate feature maps through attention transfer (Zagoruyko & Komodakis 2017),
compared at every resolution both networks have."""
import contextlib

import torch
import torch.nn.functional as F

from . import METHODS
from .base import Method, Synthesis, discrepancy, kd_loss


def attention_map(features):
    """Where a feature map is active: channel-mean of squares, flattened and L2-normalised."""
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


class StageMaps:
    """Keeps the output of the last module to finish at each spatial size of the student (the
    output of each resolution stage, as Teacher.stage_nodes does for the teacher's graph), for
    forwards run inside `recording()` only, so evaluation and export see a plain student."""

    def __init__(self, student, image_shape, sizes):
        self.maps, self.active = {}, False
        finished = []
        hooks = [m.register_forward_hook(lambda mod, i, out, m=m: finished.append((m, out)))
                 for m in student.modules() if m is not student]
        with torch.no_grad():
            was_training = student.training
            student.eval()(torch.zeros(2, *image_shape, device=next(student.parameters()).device))
            student.train(was_training)
        for h in hooks:
            h.remove()
        last = {}
        for module, out in finished:
            if isinstance(out, torch.Tensor) and out.dim() == 4 and tuple(out.shape[2:]) in sizes:
                last[tuple(out.shape[2:])] = module
        self.sizes = [s for s in sizes if s in last]
        for size in self.sizes:
            last[size].register_forward_hook(lambda mod, i, out, size=size: self._keep(size, out))

    def _keep(self, size, out):
        if self.active:
            self.maps[size] = out

    @contextlib.contextmanager
    def recording(self):
        self.active = True
        try:
            yield self.maps
        finally:
            self.active = False


@METHODS.register("cgdd")
class CGDD(Method):
    needs = {"gradients"}  # feature maps, when the teacher's graph has them, add attention transfer
    conditional = True
    student_needs = {"maps"}
    # w_attention: the weight attention transfer has in ZSKT (Micaelli & Storkey 2019).
    defaults = {"lr_generator": 1e-2, "w_label": 1.0, "w_adv": 1.0, "w_student_label": 1.0,
                "w_attention": 250.0}

    def __init__(self, teacher, student, settings, device, mean=None, std=None, fp16=False):
        super().__init__(teacher, student, settings, device, mean, std, fp16)
        sizes = teacher.stage_sizes
        self.student_maps = StageMaps(student, teacher.input_shape, sizes)
        self.teacher_map_index = [sizes.index(size) for size in self.student_maps.sizes]

    def generator_step(self, iteration, student_training):
        x, labels = self.generate(iteration)
        out = self.teacher.run(x)
        losses = {"label": F.cross_entropy(out.logits, labels), "adv": discrepancy(self.student(x), out.logits)}
        losses["generator"] = self.update_generators(
            self.s["w_label"] * losses["label"] - self.s["w_adv"] * losses["adv"])
        return Synthesis(x.detach(), out.logits.detach(), labels, losses)

    def student_loss(self, x, teacher_out, labels):
        with self.student_maps.recording():
            logits = self.student(x)
        parts = {"kd": kd_loss(logits, teacher_out.logits, self.s["temperature"]),
                 "label": F.cross_entropy(logits, labels)}
        pairs = [(self.student_maps.maps[size], teacher_out.maps[i])
                 for size, i in zip(self.student_maps.sizes, self.teacher_map_index)]
        parts["attention"] = sum(((attention_map(s) - attention_map(t)) ** 2).mean() for s, t in pairs) \
            if pairs else logits.new_zeros(())
        loss = parts["kd"] + self.s["w_student_label"] * parts["label"] + self.s["w_attention"] * parts["attention"]
        return loss, parts
