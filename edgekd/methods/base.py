"""What every synthesis method shares: generators, optimizers, losses and sampling."""
import torch
import torch.nn.functional as F
from torch import nn

from ..generators import Generator

# Settings every method understands; each method's `defaults` override some of them.
COMMON_DEFAULTS = {
    # Sized for a 2-core CPU: DAFL's 128-wide generator at batch 512 takes seconds per step there;
    # recipes restore the papers' GPU settings.
    "batch_size": 128,
    "latent_dim": 100,
    "generator_width": 32,
    "num_generators": 1,
    "lr_generator": 1e-3,
    "lr_student": 3e-3,
    "student_optimizer": "adam",  # adam | sgd (momentum 0.9)
    "weight_decay": 0.0,
    # Fractions of the budget (iterations or time) where the student's lr is multiplied by
    # lr_gamma; generators keep theirs, as in DAFL's code, since they must keep tracking the student.
    "lr_milestones": [0.4, 0.8],
    "lr_gamma": 0.1,
    "temperature": 1.0,
    # Extra student updates per iteration, each on a fresh batch from the (fixed) generator: on a
    # CPU the generator's backward pass dominates, and inference-only batches are ~4x cheaper.
    "student_steps": 5,
}


def kd_loss(student_logits, teacher_logits, temperature: float = 1.0):
    """KL(teacher || student) on softened outputs, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1),
                    reduction="batchmean") * t * t


def negative_entropy_of_mean(logits):
    """DAFL's information-entropy term: minimising it balances the classes in a batch."""
    p = F.softmax(logits, 1).mean(0)
    return (p * torch.log10(p + 1e-12)).sum()


def bn_statistics_loss(bn_inputs, bn_stats):
    """Distance between the batch statistics of each BatchNorm input and its running statistics."""
    loss = 0.0
    for x, (mean, var) in zip(bn_inputs, bn_stats):
        dims = [0] + list(range(2, x.dim()))
        loss = loss + torch.norm(x.mean(dims) - mean, 2) + torch.norm(x.var(dims, unbiased=False) - var, 2)
    return loss / max(len(bn_inputs), 1)


def discrepancy(student_logits, teacher_logits):
    """L1 distance between the two models' class probabilities: the adversarial signal. DFAD
    compares raw logits, which a generator can inflate without bound; probabilities keep it in
    [0, 2] per sample."""
    return (F.softmax(student_logits, 1) - F.softmax(teacher_logits, 1)).abs().sum(1).mean()


class Method:
    """One data-free distillation method. `step` runs one iteration: generator update(s) and
    student update(s) on the synthetic batch. Subclasses set `needs` (what teacher access they
    require: 'features' and/or 'bn'), `defaults` (their paper's settings) and `conditional`."""

    name = ""
    needs: set = set()
    defaults: dict = {}
    conditional = False

    def __init__(self, teacher, student, settings: dict, device, mean=None, std=None):
        self.teacher, self.student, self.s, self.device = teacher, student, settings, device
        c = settings
        self.generators = nn.ModuleList(
            Generator(c["latent_dim"], teacher.input_shape, c["generator_width"],
                      teacher.num_classes if self.conditional else 0, mean, std)
            for _ in range(c["num_generators"])).to(device)
        self.extra = nn.ModuleDict(self.extra_modules()).to(device)  # trained with the student
        self.opt_g = torch.optim.Adam(self.generators.parameters(), lr=c["lr_generator"], betas=(0.5, 0.999))
        student_params = list(student.parameters()) + list(self.extra.parameters())
        if c["student_optimizer"] == "sgd":
            self.opt_s = torch.optim.SGD(student_params, lr=c["lr_student"], momentum=0.9,
                                         weight_decay=c["weight_decay"])
        else:
            self.opt_s = torch.optim.Adam(student_params, lr=c["lr_student"], weight_decay=c["weight_decay"])
        self.base_lrs = {opt: [g["lr"] for g in opt.param_groups] for opt in (self.opt_g, self.opt_s)}

    def extra_modules(self) -> dict:
        return {}

    def step(self, iteration: int) -> dict:
        raise NotImplementedError

    def set_lr_scale(self, generator: float, student: float):
        for opt, scale in ((self.opt_g, generator), (self.opt_s, student)):
            for group, lr in zip(opt.param_groups, self.base_lrs[opt]):
                group["lr"] = lr * scale

    def generate(self, iteration: int):
        """A training batch from the generator whose turn it is (round robin over the ensemble)."""
        gen = self.generators[iteration % len(self.generators)]
        return gen.sample(self.s["batch_size"], device=self.device)

    def train_student(self, iteration, x, teacher_logits, teacher_features):
        """The student's updates of one iteration: one on the generator's batch, then
        `student_steps - 1` on fresh batches. Returns the losses of the first."""
        first = self.student_update(x.detach(), teacher_logits.detach(),
                                    None if teacher_features is None else teacher_features.detach())
        for _ in range(self.s["student_steps"] - 1):
            with torch.no_grad():
                x, _ = self.generate(iteration)
                t_logits, t_features, _ = self.teacher.run(x)
            self.student_update(x, t_logits, t_features)
        return first

    def student_update(self, x, teacher_logits, teacher_features=None) -> dict:
        """One student step: KD on logits (methods with feature terms override this)."""
        loss = kd_loss(self.student(x), teacher_logits, self.s["temperature"])
        self.opt_s.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_s.step()
        return {"kd": loss.item()}

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch: int = 256):
        """n synthetic inputs drawn from all generators in turn (held-out: fresh noise)."""
        rng = torch.Generator().manual_seed(seed)
        out = []
        for i, start in enumerate(range(0, n, batch)):
            gen = self.generators[i % len(self.generators)]
            out.append(gen.sample(min(batch, n - start), rng, self.device)[0])
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"generators": self.generators.state_dict(), "extra": self.extra.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_s": self.opt_s.state_dict()}

    def load_state_dict(self, state: dict):
        self.generators.load_state_dict(state["generators"])
        self.extra.load_state_dict(state["extra"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_s.load_state_dict(state["opt_s"])
