"""IDEAL (Zhang et al., ICLR 2023) with DFME's gradient estimate (Truong et al., CVPR 2021):
distillation from a teacher that can only be queried. The generator learns through the student,
the teacher's differentiable proxy, to make images the student puts in a preset class (IDEAL);
the teacher is asked once about each image, and its answers (logits, probabilities or just a
label) join the pool the student learns from: where the student was confidently wrong, the answer
corrects it exactly there. Alone, that starts slowly: a fresh student agrees with nothing, and
most early images are one class to the teacher. So the generator also descends the teacher's own
cross-entropy towards the preset class, its input gradient estimated by forward differences
(base.forward_difference_gradient) along the student's input gradient and one random direction;
two extra queries per image (one, the random direction alone, for a teacher that only answers
labels).

`auto` picks dafl-zo instead, for teachers that answer scores and labels alike: on the int8
TFLite LeNet-5 answering labels only, proxy's student stayed at chance (10.25 % after 5 minutes
at one thread) where dafl-zo's reached 57-72 % (docs/benchmarks.md, "Query-only teachers")."""
import torch
import torch.nn.functional as F

from . import METHODS
from .base import Method, Synthesis, cross_entropy_per_image, forward_difference_gradient, negative_entropy_of_mean


@METHODS.register("proxy")
class StudentProxy(Method):
    needs: set = set()  # the teacher's outputs alone
    conditional = True
    defaults = {
        "batch_size": 64,  # images per iteration (teacher queries: 3 per image with w_teacher, 2 for labels)
        # lr_generator: at 2e-2 the generator learnt to fool the student within minutes and the
        # student fell from 59 % to 24 % on MNIST between minutes 3 and 6 of a 10-minute run;
        # 5e-3 rose steadily in 4 minutes at one thread (51 -> 59 %).
        "generator_width": 16, "lr_generator": 5e-3, "w_entropy": 5.0,
        # edgekd's addition: the teacher's own cross-entropy towards the preset class, its
        # gradient estimated by forward differences at distance zo_sigma (per pixel of a random
        # direction); 0 turns it off. On MNIST (int8 TFLite LeNet-5, 2 minutes, one thread) a
        # random direction alone raised the student from 43 % to 59-71 % (weights 1 and 5) for
        # twice the queries; adding the student's gradient as a direction, 57 % -> 71 % after
        # 5 minutes (docs/benchmarks.md); weight 20 did worse (64 %).
        "w_teacher": 5.0, "zo_sigma": 0.05,
        "pool_size": 60000, "student_steps": 5, "student_optimizer": "sgd", "lr_student": 0.1,
        "weight_decay": 5e-4, "lr_schedule": "cosine", "clip_grad_norm": 5.0,
    }
    additions = ("a class-conditional generator (IDEAL's is unconditional) with its class-balance term; "
                 "the teacher's cross-entropy towards the preset class, by forward differences (DFME's "
                 "estimator); the pool, cached answers, SGD with cosine decay for the student")

    def generator_step(self, iteration, student_training):
        x, labels = self.generate(iteration, self.images_paid_for())
        logits = self.student(x)
        losses = {"label": F.cross_entropy(logits, labels), "entropy": negative_entropy_of_mean(logits)}
        loss = losses["label"] + self.s["w_entropy"] * losses["entropy"]
        with torch.no_grad():
            answers = self.teacher(x)
        if not self.s["w_teacher"]:
            losses["generator"] = self.update_generators(loss)
            return Synthesis(x.detach(), answers, labels, losses)

        # Bounded, so that a label-only teacher's cross-entropy (0 or about LABEL_LOGIT) cannot
        # swamp the generator's other terms.
        def towards_labels(z):
            return cross_entropy_per_image(z, labels).clamp(max=10.0)
        prior = None
        if self.follows_student():
            probe = x.detach().requires_grad_(True)
            prior, = torch.autograd.grad(towards_labels(self.student(probe)).sum(), probe)
        grad = forward_difference_gradient(self.teacher, x, answers, towards_labels, self.s["zo_sigma"], prior)
        # (grad * x) has grad as its gradient with respect to x; logged is the teacher's own term.
        self.update_generators(loss + self.s["w_teacher"] * (grad * x).sum() / len(x))
        losses["teacher"] = towards_labels(answers).mean()
        losses["generator"] = loss.detach() + self.s["w_teacher"] * losses["teacher"]
        return Synthesis(x.detach(), answers, labels, losses)

    def follows_student(self) -> bool:
        """Whether the estimate also looks along the student's gradient. Not for a teacher that
        answers labels: their cross-entropy is flat except at a class boundary, and with it the
        pool of the embedded LeNet-5's labels fell onto one class within 15 seconds (seed 0)."""
        return self.teacher.output != "label"

    def queries_per_image(self) -> int:
        return 1 + (1 + self.follows_student() if self.s["w_teacher"] else 0)
