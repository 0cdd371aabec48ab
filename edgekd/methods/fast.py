"""Fast-DFKD (Fang et al., "Up to 100x Faster Data-Free Knowledge Distillation", AAAI 2022): a
generator meta-learned (first-order MAML) so that a few inner steps from it give a new batch.
Each round clones the meta generator, optimises the clone and fresh latent codes for a few steps
on BatchNorm statistics (matched with momentum across rounds, so the pool as a whole matches
them) + one-hot towards random targets + an adversarial term masked to the samples where
teacher and student agree; the round's best batch joins the pool, and the clone's gradients of
every inner step update the meta generator. The student learns from the pool with SGD and
cosine decay."""
import copy

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from . import METHODS
from .base import Method, Synthesis, batch_statistics, bn_statistics_loss
from ..pool import augment


@METHODS.register("fast")
class Fast(Method):
    needs = {"gradients", "bn"}
    # Sized for a 2-core CPU (benchmarks/time_to_accuracy.py); recipes/fast-*.yaml has the
    # paper's GPU settings. Batch 64 and a 32-wide generator give 4x more generator updates per
    # second than the paper's 256 and 128; the student waits for 40 % of the budget (the paper:
    # 20 of 220 epochs) because on a CPU it has ~3k steps, not 88k, and must spend them on
    # images worth learning from.
    defaults = {
        "inner_steps": 2, "lr_generator": 1e-2, "lr_latent": 0.015, "latent_dim": 256, "batch_size": 64,
        "w_bn": 1.0, "w_first_bn": 10.0, "w_onehot": 1.0, "w_adv": 1.0, "bn_momentum": 0.9,
        "student_optimizer": "sgd", "lr_student": 0.1, "weight_decay": 5e-4, "lr_schedule": "cosine",
        "temperature": 4.0, "synthesis_only": 0.4, "student_steps": 20, "pool_size": 50000,
    }

    additions = "the first BatchNorm's statistics weighted w_first_bn times (DeepInversion's multiplier)"

    loss_scaling = False  # the meta-update steps its optimizers itself

    def __init__(self, teacher, student, settings, device, mean=None, std=None, fp16=False):
        super().__init__(teacher, student, settings, device, mean, std, fp16)
        self.bn_memory = None  # momentum-averaged batch statistics of past rounds, per BatchNorm

    def generator_lr(self):
        # The meta generator's step is the inner learning rate times the inner steps (their code).
        return self.s["lr_generator"] * self.s["inner_steps"]

    def bn_loss(self, stats):
        """BatchNorm statistics matched after blending this batch's with those of past rounds
        (their DeepInversion hook with `mmt`), so the pool as a whole matches them."""
        m = self.s["bn_momentum"]
        if self.bn_memory is not None:
            stats = [((1 - m) * mean + m * old_mean, (1 - m) * var + m * old_var)
                     for (mean, var), (old_mean, old_var) in zip(stats, self.bn_memory)]
        return bn_statistics_loss(stats, self.teacher.bn_stats, self.s["w_first_bn"])

    def generator_step(self, iteration, student_training):
        s, meta = self.s, self.generators[0]
        fast = copy.deepcopy(meta)
        z = torch.randn(s["batch_size"], meta.latent_dim, device=self.device, requires_grad=True)
        targets = torch.randint(0, self.teacher.num_classes, (s["batch_size"],), device=self.device)
        scale = self.opt_g.param_groups[0]["lr"] / self.generator_lr()  # NaN roll-backs lower it
        inner = torch.optim.Adam([{"params": fast.parameters()}, {"params": [z], "lr": s["lr_latent"] * scale}],
                                 lr=s["lr_generator"] * scale, betas=(0.5, 0.999))
        self.opt_g.zero_grad(set_to_none=True)
        best = None
        for _ in range(s["inner_steps"]):
            x = fast(z)
            view = augment(x, s["augment_crop"], s["augment_flip"])
            out = self.teacher.run(view, bn=True)
            stats = batch_statistics(out.bn_inputs)
            losses = {"bn": self.bn_loss(stats), "onehot": F.cross_entropy(out.logits, targets)}
            if student_training and s["w_adv"]:
                self.student.eval()
                s_logits = self.student(view)
                self.student.train()
                agree = (s_logits.argmax(1) == out.logits.argmax(1)).float()
                kl = F.kl_div(F.log_softmax(s_logits, 1), F.softmax(out.logits, 1), reduction="none").sum(1)
                losses["adv"] = (kl * agree).mean()
            loss = (s["w_bn"] * losses["bn"] + s["w_onehot"] * losses["onehot"]
                    - s["w_adv"] * losses.get("adv", 0.0))
            # The round keeps its best batch, chosen on the device (no host sync per inner step).
            step = (loss.detach(), x.detach(), {"generator": loss.detach(), **{k: v.detach() for k, v in losses.items()}})
            if best is None:
                best = step
            else:
                better = step[0] < best[0]
                best = tree_map(lambda new, old: torch.where(better, new, old), step, best)
            inner.zero_grad(set_to_none=True)
            loss.backward()
            for meta_p, fast_p in zip(meta.parameters(), fast.parameters()):  # first-order MAML
                if fast_p.grad is not None:
                    meta_p.grad = fast_p.grad.clone() if meta_p.grad is None else meta_p.grad + fast_p.grad
            inner.step()
        self.opt_g.step()
        m = s["bn_momentum"]
        new = [(mean.detach(), var.detach()) for mean, var in stats]
        self.bn_memory = new if self.bn_memory is None else [
            (m * old_mean + (1 - m) * mean, m * old_var + (1 - m) * var)
            for (old_mean, old_var), (mean, var) in zip(self.bn_memory, new)]
        return Synthesis(best[1], None, None, best[2])

    def state_dict(self):
        return {**super().state_dict(), "bn_memory": self.bn_memory}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        # Checkpoints are loaded onto the CPU; the statistics are blended with the device's.
        self.bn_memory = tree_map(lambda t: t.to(self.device), state["bn_memory"])
