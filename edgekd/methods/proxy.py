"""IDEAL (Zhang et al., ICLR 2023) with DFME's gradient estimate (Truong et al., CVPR 2021):
distillation from a teacher that can only be queried. The generator learns through the student,
the teacher's differentiable proxy, to make images the student puts in a preset class (IDEAL);
the teacher is asked once about each image, and its answers (logits, probabilities or just a
label) join the pool the student learns from: where the student was confidently wrong, the answer
corrects it exactly there. Alone, that starts slowly: a fresh student agrees with nothing, and
most early images are one class to the teacher. So the generator also descends the teacher's own
cross-entropy towards the preset class, its input gradient estimated by forward differences
(DFME's estimator) along two directions per image: the student's own input gradient, which is
where the teacher's mostly lies once the student imitates it (the transfer prior of Cheng et
al.'s P-RGF, 2019), and one random direction orthogonal to it for the rest; two extra queries
per image (one, the random direction alone, for a teacher that only answers labels).

Why this and not DFME alone (or MAZE): they estimate the gradient of every generator step from
forward differences only, with (directions + 1) queries per image and millions of queries in
all; a teacher query is a forward pass, the dearest thing on a CPU. Here the student carries most
of the generator's signal for free and the estimate only steers it, so one image costs three
queries, or two (README, "Query-only teachers")."""
import torch
import torch.nn.functional as F

from ..teacher import QueryBudgetSpent
from . import METHODS
from .base import Method, Synthesis, negative_entropy_of_mean


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
        # 5 minutes (README); weight 20 did worse (64 %).
        "w_teacher": 5.0, "zo_sigma": 0.05,
        "pool_size": 60000, "student_steps": 5, "student_optimizer": "sgd", "lr_student": 0.1,
        "weight_decay": 5e-4, "lr_schedule": "cosine", "clip_grad_norm": 5.0,
    }
    additions = ("a class-conditional generator (IDEAL's is unconditional) with its class-balance term; "
                 "the teacher's cross-entropy towards the preset class, by forward differences (DFME's "
                 "estimator); the pool, cached answers, SGD with cosine decay for the student")

    def generator_step(self, iteration, student_training):
        x, labels = self.generate(iteration, self.queries_left())
        logits = self.student(x)
        losses = {"label": F.cross_entropy(logits, labels), "entropy": negative_entropy_of_mean(logits)}
        loss = losses["label"] + self.s["w_entropy"] * losses["entropy"]
        with torch.no_grad():
            answers = self.teacher(x)
        if self.s["w_teacher"]:
            losses["teacher"] = self.teacher_gradient_term(x, answers, labels)
            loss = loss + self.s["w_teacher"] * losses["teacher"]
        losses["generator"] = self.update_generators(loss)
        return Synthesis(x.detach(), answers, labels, losses)

    def teacher_gradient_term(self, x, answers, labels):
        """A loss whose gradient with respect to x is the forward-difference estimate of the
        gradient of the teacher's cross-entropy towards `labels`: exact along the student's
        input gradient, one random sample of the rest."""
        sigma, pixels = self.s["zo_sigma"], x[0].numel()
        directions, weights = [torch.randn(len(x), pixels, device=x.device)], [1.0]
        if self.follows_student():
            probe = x.detach().requires_grad_(True)
            student_grad, = torch.autograd.grad(F.cross_entropy(self.student(probe), labels, reduction="sum"), probe)
            prior = F.normalize(student_grad.flatten(1), dim=1)
            directions[0] -= (directions[0] * prior).sum(1, keepdim=True) * prior
            # As long as a random direction (sqrt(pixels)), so that sigma is one step size; its
            # slope times itself over its squared length is the gradient's component along it.
            directions.insert(0, prior * pixels ** 0.5)
            weights.insert(0, 1 / pixels)
        with torch.no_grad():
            d = torch.stack(directions)  # (directions, images, pixels)
            # Bounded, so that a label-only teacher's cross-entropy (0 or about LABEL_LOGIT)
            # cannot swamp the generator's other terms.
            base = F.cross_entropy(answers, labels, reduction="none").clamp(max=10.0)
            moved = F.cross_entropy(self.teacher((x.detach().flatten(1) + sigma * d).view(-1, *x.shape[1:])),
                                    labels.repeat(len(d)), reduction="none").clamp(max=10.0)
            slopes = (moved.view(len(d), -1) - base) / sigma
            grad = (slopes[..., None] * d * torch.tensor(weights, device=x.device).view(-1, 1, 1)).sum(0)
        return (grad.view_as(x) * x).sum() / len(x)

    def follows_student(self) -> bool:
        """Whether the estimate also looks along the student's gradient. Not for a teacher that
        answers labels: their cross-entropy is flat except at a class boundary, and with it the
        pool of the embedded LeNet-5's labels fell onto one class within 15 seconds (seed 0)."""
        return self.teacher.output != "label"

    def queries_left(self) -> int:
        """The batch, cut to the images the queries left pay for. Fewer queries than one image
        costs (a run killed between an image's queries can leave that) count as spent."""
        limit, batch = self.teacher.query_limit, self.s["batch_size"]
        if limit is None:
            return batch
        per_image = 1 + (1 + self.follows_student() if self.s["w_teacher"] else 0)
        images = (limit - self.teacher.queries) // per_image
        if images < 1:
            raise QueryBudgetSpent
        return min(batch, images)

