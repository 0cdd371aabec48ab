"""What every synthesis method shares: generators, optimizers, losses, and the student's step.

A method has two halves. `generator_step` is its synthesis: one update of its generator(s) that
returns the batch the teacher judged (a `Synthesis`). `student_loss` is what its student minimises
on a batch, from the pool or fresh from the generators. The training loop in distillation.py joins them.
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..generators import OUTPUTS, Generator
from ..teacher import QueryBudgetSpent

# Settings every method understands; each method's `defaults` override some of them.
COMMON_DEFAULTS = {
    # Sized for a 2-core CPU: DAFL's 128-wide generator at batch 512 takes seconds per step there;
    # recipes restore the papers' GPU settings.
    "batch_size": 128,  # synthesis batch (one generator update)
    "latent_dim": 100,
    "generator_width": 32,
    "generator_output": "sigmoid",  # sigmoid (images in [0, 1]) | tanh_bn (DAFL's standardised output)
    "num_generators": 1,
    "lr_generator": 1e-3,
    "lr_student": 3e-3,
    "student_optimizer": "adam",  # adam | sgd (momentum 0.9)
    "weight_decay": 0.0,
    # Largest gradient norm of a student step (0: no clipping). Students without BatchNorm
    # (LeNet-5) diverge under SGD at the learning rates that suit ResNets; clipping bounds the
    # step without slowing the ones that converge.
    "clip_grad_norm": 0.0,
    # The student's learning rate over its training: "cosine" decays to zero; "step" multiplies
    # it by lr_gamma at each of lr_milestones (fractions of the student's share of the budget).
    # Generators keep theirs, as in DAFL's code, since they must keep tracking the student.
    "lr_schedule": "step",
    "lr_milestones": [0.4, 0.8],
    "lr_gamma": 0.1,
    "temperature": 1.0,
    # Student updates per generator update. On a CPU the generator's pass through the teacher's
    # backward dominates, and a student step on pooled images costs a fraction of it.
    "student_steps": 5,
    "student_batch_size": 128,
    # The synthetic data pool (edgekd/pool.py): every synthesized batch is kept, up to pool_size
    # images (oldest evicted first), and student steps draw augmented batches from it.
    # 0 streams instead: each student step sees a fresh generator batch once. Streaming is the
    # seed methods' default because it measured better within minutes (docs/distill.md, "The synthetic
    # data pool"): a generator early in training fills the pool with images it has since
    # learnt to improve on. fast, built around the pool, keeps one.
    "pool_size": 0,
    # ... and at most this many MiB of memory (images as uint8 plus their logits): 60,000 CIFAR
    # images take 187 MiB, but 60,000 of 224 x 224 x 3 would take 9 GB, so large inputs are held
    # by bytes, not by count (a 1,000-class 224-px teacher: 6,900 images in 1 GiB).
    "pool_memory_mb": 1024,
    "augment_crop": 4,  # random crop after padding by this many pixels (0: off)
    # Horizontal flip: true, false (teachers where a mirror image changes the class, such as
    # digits) or auto: on when the teacher gives a mirrored image the same class (distillation.py).
    "augment_flip": "auto",
    # Teacher logits for a pooled image: "cached" (computed once, when the image was made) or
    # "view" (the teacher run again on each augmented view).
    "pool_logits": "cached",
    # Schedule, as fractions of the budget: generators train alone until synthesis_only (the
    # student waits for a pool worth learning from), and stop training at synthesis_until (the
    # frozen generators then only sample, as in Luo et al.'s two-stage schedule).
    "synthesis_only": 0.0,
    "synthesis_until": 1.0,
}

# Settings that take one of a few values (checked when a run's settings are resolved).
CHOICES = {
    "generator_output": OUTPUTS,
    "student_optimizer": ("adam", "sgd"),
    "lr_schedule": ("cosine", "step"),
    "augment_flip": (True, False, "auto"),
    "pool_logits": ("cached", "view"),
}


@dataclass
class Synthesis:
    """The batch a generator step made, as the teacher saw it."""
    x: torch.Tensor  # model inputs (normalised)
    logits: torch.Tensor | None  # the teacher's on x; None: not computed on x itself
    labels: torch.Tensor | None = None  # requested classes, for conditional generators
    losses: dict = field(default_factory=dict)


def kd_loss(student_logits, teacher_logits, temperature: float = 1.0):
    """KL(teacher || student) on softened outputs, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1),
                    reduction="batchmean") * t * t


def negative_entropy_of_mean(logits):
    """DAFL's information-entropy term: minimising it balances the classes in a batch."""
    p = F.softmax(logits, 1).mean(0)
    return (p * torch.log10(p + 1e-12)).sum()


def batch_statistics(bn_inputs):
    """Per-channel (mean, biased variance) of each BatchNorm input over batch and space."""
    stats = []
    for x in bn_inputs:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 2 else x.t()
        var, mean = torch.var_mean(flat, 1, unbiased=False)
        stats.append((mean, var))
    return stats


def bn_statistics_loss(batch_stats, bn_stats, first_weight: float = 1.0):
    """DeepInversion's distance (Yin et al. 2020): ||mean - running_mean||_2 + ||var - running_var||_2
    per BatchNorm, averaged over the layers, the first one weighted `first_weight` times (their
    first_bn_multiplier: the first layer's statistics set the colours and edges of the images)."""
    loss = 0.0
    for i, ((mean, var), (r_mean, r_var)) in enumerate(zip(batch_stats, bn_stats)):
        loss = loss + (first_weight if i == 0 else 1.0) * (torch.norm(mean - r_mean, 2) + torch.norm(var - r_var, 2))
    return loss / max(len(batch_stats), 1)


def cross_entropy_per_image(logits, labels):
    """Cross-entropy of each image's logits (..., images, classes) towards labels (images,)."""
    picked = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    return -F.log_softmax(logits, -1).gather(-1, picked).squeeze(-1)


def forward_difference_gradient(teacher, x, answers, objective, sigma: float, prior=None):
    """DFME's estimate (Truong et al. 2021) of the gradient of objective(teacher(x)) with respect
    to each image of x, from forward differences at distance `sigma` (per pixel of a random
    direction): exact along `prior` when given, one random sample of the rest. `objective` maps
    logits (..., images, classes) to one loss per image (..., images); `answers` are the
    teacher's logits on x. Costs one query per image and direction.

    The prior is the student's input gradient of the same objective: once the student imitates
    the teacher, the teacher's gradient mostly lies along it (the transfer prior of Cheng et
    al.'s P-RGF, 2019); the random direction, orthogonal to it, covers the rest."""
    pixels = x[0].numel()
    directions, weights = [torch.randn(len(x), pixels, device=x.device)], [1.0]
    if prior is not None:
        prior = F.normalize(prior.flatten(1), dim=1)
        directions[0] -= (directions[0] * prior).sum(1, keepdim=True) * prior
        # As long as a random direction (sqrt(pixels)), so that sigma is one step size; its
        # slope times itself over its squared length is the gradient's component along it.
        directions.insert(0, prior * pixels ** 0.5)
        weights.insert(0, 1 / pixels)
    with torch.no_grad():
        d = torch.stack(directions)  # (directions, images, pixels)
        moved = teacher((x.detach().flatten(1) + sigma * d).view(-1, *x.shape[1:])).view(len(d), len(x), -1)
        slopes = (objective(moved) - objective(answers)) / sigma
        return (slopes[..., None] * d * torch.tensor(weights, device=x.device).view(-1, 1, 1)).sum(0).view_as(x)


def discrepancy(student_logits, teacher_logits):
    """Mean absolute difference of the two models' logits (DFAD's and DDAD's adversarial
    discrepancy): the generator maximises it, the student minimises it."""
    return (student_logits - teacher_logits).abs().mean()


class Method:
    """One data-free distillation method. Subclasses set `needs` (what teacher access they
    require beyond its outputs: "gradients" to its input, "bn", "features"), `defaults` (their paper's settings) and
    `conditional` (generators take a class label), and implement `generator_step`."""

    needs: set = {"gradients"}
    defaults: dict = {}
    loss_scaling = True  # its optimizer steps go through optimize(), so --precision fp16 works
    conditional = False
    # What edgekd adds to the paper's method; `edgekd methods` lists it.
    additions = "the synthetic data pool, off by default (--set pool_size=N)"
    # What the student's loss reads from the teacher beyond logits: with any of these, pooled
    # images are run through the teacher again instead of using cached logits.
    student_needs: set = set()  # "features", "maps"

    def __init__(self, teacher, student, settings: dict, device, mean=None, std=None, fp16: bool = False):
        """`student` is the module to train (under DistributedDataParallel on several ranks);
        `fp16` scales the losses so that float16 gradients do not underflow (torch.amp)."""
        self.teacher, self.student, self.s, self.device = teacher, student, settings, torch.device(device)
        c = settings
        self.generators = self.make_generators(mean, std).to(device)
        trainable = list(self.generators.parameters())
        # None: a source of images with nothing to train (procedural.py)
        self.opt_g = torch.optim.Adam(trainable, lr=self.generator_lr(), betas=(0.5, 0.999)) if trainable else None
        if c["student_optimizer"] == "sgd":
            self.opt_s = torch.optim.SGD(student.parameters(), lr=c["lr_student"], momentum=0.9,
                                         weight_decay=c["weight_decay"], nesterov=True)
        else:
            self.opt_s = torch.optim.Adam(student.parameters(), lr=c["lr_student"], weight_decay=c["weight_decay"])
        self.base_lrs = {opt: [g["lr"] for g in opt.param_groups] for opt in (self.opt_g, self.opt_s) if opt}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)

    def make_generators(self, mean, std) -> nn.ModuleList:
        """The method's image sources: num_generators of DAFL's generators (generators.py)."""
        c = self.s
        return nn.ModuleList(
            Generator(c["latent_dim"], self.teacher.input_shape, c["generator_width"],
                      self.teacher.num_classes if self.conditional else 0, mean, std, c["generator_output"])
            for _ in range(c["num_generators"]))

    def optimize(self, opt, loss, clip_norm: float = 0.0):
        """One step of `opt` on `loss` (scaled under fp16), its gradients clipped to `clip_norm`."""
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip_norm:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip_norm)
        self.scaler.step(opt)
        self.scaler.update()

    def generator_lr(self) -> float:
        return self.s["lr_generator"]

    def generator_step(self, iteration: int, student_training: bool) -> Synthesis:
        """One update of the generator(s); `student_training` says whether the student has begun
        (adversarial terms wait for a student worth fooling)."""
        raise NotImplementedError

    def update_generators(self, loss):
        """One optimizer step on the generators' objective; returns it (logged as "generator")."""
        self.optimize(self.opt_g, loss)
        return loss.detach()

    @torch.no_grad()
    def frozen_step(self, iteration: int) -> Synthesis:
        """A fresh batch from the generators without training them (after synthesis_until)."""
        x, labels = self.generate(iteration)
        return Synthesis(x, self.teacher(x), labels)

    def set_lr_scale(self, generator: float, student: float):
        scales = {self.opt_g: generator, self.opt_s: student}
        for opt, lrs in self.base_lrs.items():
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * scales[opt]

    def queries_per_image(self) -> int:
        """Teacher queries one synthesized image costs (its answer, plus any gradient estimate)."""
        return 1

    def images_paid_for(self) -> int:
        """The synthesis batch, cut to the images the query budget left pays for. Fewer queries
        than one image costs (a run killed between an image's queries can leave that) count as
        spent."""
        limit, batch = self.teacher.query_limit, self.s["batch_size"]
        if limit is None:
            return batch
        images = (limit - self.teacher.queries) // self.queries_per_image()
        if images < 1:
            raise QueryBudgetSpent
        return min(batch, images)

    def generate(self, iteration: int, n: int | None = None):
        """A batch from the generator whose turn it is (round robin over the ensemble)."""
        gen = self.generators[iteration % len(self.generators)]
        return gen.sample(n or self.s["batch_size"])

    def student_loss(self, x, teacher_out, labels) -> tuple[torch.Tensor, dict]:
        """The student's objective on a batch: KD on logits (methods with more terms override it)."""
        loss = kd_loss(self.student(x), teacher_out.logits, self.s["temperature"])
        return loss, {"kd": loss}

    def student_step(self, x, teacher_out, labels) -> dict:
        loss, parts = self.student_loss(x, teacher_out, labels)
        self.optimize(self.opt_s, loss, self.s["clip_grad_norm"])
        return parts

    def state_dict(self) -> dict:
        return {"generators": self.generators.state_dict(), "opt_g": self.opt_g.state_dict() if self.opt_g else None,
                "opt_s": self.opt_s.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict):
        self.generators.load_state_dict(state["generators"])
        self.scaler.load_state_dict(state["scaler"])
        if self.opt_g:
            self.opt_g.load_state_dict(state["opt_g"])
        self.opt_s.load_state_dict(state["opt_s"])
