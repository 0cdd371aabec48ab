"""Throughput: images per second of each stage of distillation and of one whole iteration of
every method, through edgekd and through a minimal hand-written PyTorch loop doing the same math
with the same models in the same memory layout (channels_last, as edgekd runs them) (the floor of
overhead), on the current device and precision.

    python benchmarks/throughput.py [--case cifar10|mnist] [--device auto] [--precision auto]
                                    [--compile] [--threads N] [--seconds 5]

Cases: cifar10 (ResNet-56 teacher, the akamaster weights from ../shared when present, else
random ones: speed does not depend on them -> resnet20) and mnist (lenet5_bn -> lenet5_half).
The teacher edgekd sees is a .pt2 export of the very module the hand-written loop runs.

Stages (batch 64, the synthesis batch of condbn, and the student batch of 128):
  teacher forward            logits of a batch, no gradient
  teacher forward+backward   the gradient of the logits' sum with respect to the input
  student step               KD on a batch with known teacher logits: forward, backward, SGD step
  generator step             condbn's: generator -> crop/flip -> teacher with BatchNorm inputs ->
                             statistics + label loss -> backward through the teacher -> Adam step
Whole iterations: `edgekd distill` itself, with synthesis and student steps in every iteration
(synthesis_only=0, synthesis_until=1) and no evaluation or checkpoint inside the timed span, on
its own training clock: two runs of the same seed, WARMUP_ITERATIONS and WARMUP_ITERATIONS +
--iterations long, and the difference of their times, so that the first iterations are left
out as the hand-written loop's warm-up calls are. Each method's pair of runs alternates with the
hand-written loop (ROUNDS rounds, each side's fastest). Images per second count the synthesized and the
student's images. Every method has its hand-written loop: condbn, fast and proxy with a pool, dafl, bnstats,
ddad, cgdd and dafl-zo streaming.
Writes benchmarks/results/throughput_<case>_<device>_<precision>.json.
"""
import argparse
import contextlib
import copy
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from edgekd.data import Dataset
from edgekd.distillation import (MEMORY_FORMAT, PRECISIONS, Budget, distill, new_config, pick_device, pick_precision,
                                 resolve_settings)
from edgekd.fileio import write_json
from edgekd.generators import Generator, ProceduralImages
from edgekd.methods import METHODS
from edgekd.methods.base import (batch_statistics, bn_statistics_loss, cross_entropy_per_image, discrepancy,
                                 forward_difference_gradient, kd_loss, negative_entropy_of_mean)
from edgekd.methods.bnstats import gaussian_kl_loss
from edgekd.methods.cgdd import attention_map
from edgekd.methods.dafl_zo import objective_per_image
from edgekd.methods.procedural import ClassPopulation
from edgekd.pool import augment
from edgekd.students import create_student
from edgekd.teacher import TeacherOutput, load_teacher, save_export

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEKD_DATA", ROOT.parent / "shared"))
SYNTH_BATCH, STUDENT_BATCH = 64, 128
ROUNDS = 3
WARMUP_ITERATIONS = 3  # as the hand-written loop's 3 untimed calls (timed())
CASES = {"cifar10": ("resnet56", "resnet20", (3, 32, 32)), "mnist": ("lenet5_bn", "lenet5_half", (1, 28, 28))}


def teacher_module(case: str) -> torch.nn.Module:
    arch, _, shape = CASES[case]
    model = create_student(arch, shape[0], 10, shape[1:])
    weights = DATA / "teachers/cifar10-resnet-akamaster/resnet56-4bfd9763.th"
    if case == "cifar10" and weights.exists():
        state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model.eval()


def timed(step, device, seconds: float, images: int) -> float:
    """Images per second of `step` over about `seconds`, after 3 warm-up calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
    sync()
    return calls * images / (time.perf_counter() - start)


def stage_outputs(model, shape, device, store: dict) -> list:
    """Forward hooks that keep, in `store` by spatial size, the output of the last module to
    finish at each size (each resolution stage's output, as cgdd compares them)."""
    last, order = {}, []
    probes = [m.register_forward_hook(lambda mod, i, out: order.append((mod, out))) for m in model.modules()]
    with torch.no_grad():
        was_training = model.training
        model.eval()(torch.zeros(2, *shape, device=device))
        model.train(was_training)
    for h in probes:
        h.remove()
    for module, out in order:
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            last[tuple(out.shape[2:])] = module
    return [m.register_forward_hook(lambda mod, i, out, size=size: store.__setitem__(size, out))
            for size, m in last.items()]


class HandWritten:
    """The same math as edgekd's iteration of every method, in plain PyTorch: the teacher's
    BatchNorm inputs, penultimate features and stage outputs taken by forward hooks, the pool a
    uint8 tensor, no run directory."""

    def __init__(self, teacher, student_arch, shape, device, method, compile_=False):
        s = self.s = resolve_settings(method, {}, {"synthesis_only": 0.0, "synthesis_until": 1.0})
        self.teacher, self.device = teacher, device
        self.student = create_student(student_arch, shape[0], 10, shape[1:]).to(device, memory_format=MEMORY_FORMAT)
        classes = 10 if METHODS.get(method).conditional else 0
        self.gens = [Generator(s["latent_dim"], shape, s["generator_width"], classes).to(
            device, memory_format=MEMORY_FORMAT) for _ in range(s["num_generators"])]
        self.gen, self.turn = self.gens[0], 0  # the generator whose turn it is (round robin, as edgekd's)
        # procedural's images are data, not a model: drawn, and its population kept, by edgekd's
        # own code on both sides.
        self.procedural = ProceduralImages(shape).to(device) if method == "procedural" else None
        self.population = ClassPopulation(10, s["population_size"] // 10, shape).to(device) \
            if method == "procedural" else None
        if compile_:
            for model in (self.student, *self.gens):
                model.compile()
        self.opt_g = torch.optim.Adam([p for g in self.gens for p in g.parameters()], lr=s["lr_generator"],
                                      betas=(0.5, 0.999))
        if s["student_optimizer"] == "sgd":
            self.opt_s = torch.optim.SGD(self.student.parameters(), lr=s["lr_student"], momentum=0.9,
                                         weight_decay=s["weight_decay"], nesterov=True)
        else:
            self.opt_s = torch.optim.Adam(self.student.parameters(), lr=s["lr_student"], weight_decay=s["weight_decay"])
        self.bns = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.bn_running = [(m.running_mean, m.running_var) for m in self.bns]
        last_linear = [m for m in teacher.modules() if isinstance(m, torch.nn.Linear)][-1]
        self.bn_inputs, self.features = [], []
        self.hooks = [m.register_forward_hook(lambda mod, inputs, out: self.bn_inputs.append(inputs[0]))
                      for m in self.bns]
        self.hooks.append(last_linear.register_forward_hook(lambda mod, inputs, out: self.features.append(inputs[0])))
        self.teacher_maps, self.student_maps = {}, {}
        if method == "cgdd":
            self.hooks += stage_outputs(teacher, shape, device, self.teacher_maps)
            self.hooks += stage_outputs(self.student, shape, device, self.student_maps)
        self.bn_memory = None  # fast's momentum-averaged batch statistics
        self.pool = torch.randint(0, 256, (4096, *shape), dtype=torch.uint8)
        self.pool_logits = torch.randn(4096, 10)

    def close(self):
        for h in self.hooks:
            h.remove()

    def teach(self, x):
        self.bn_inputs.clear(), self.features.clear()
        return self.teacher(x)

    def student_step(self, x, logits, loss_of=None):
        out = self.student(x)
        loss = loss_of(out, logits) if loss_of else kd_loss(out, logits, self.s["temperature"])
        self.opt_s.zero_grad(set_to_none=True)
        loss.backward()
        if self.s["clip_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.s["clip_grad_norm"])
        self.opt_s.step()

    def condbn_generator_step(self):
        s = self.s
        z = torch.randn(s["batch_size"], self.gen.latent_dim, device=self.device)
        y = torch.randint(0, 10, (s["batch_size"],), device=self.device)
        view = augment(self.gen(z, y), s["augment_crop"], True)
        logits = self.teach(view)
        loss = s["w_bn"] * bn_statistics_loss(batch_statistics(self.bn_inputs), self.bn_running, s["w_first_bn"]) + \
            s["w_label"] * F.cross_entropy(logits, y)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return view.detach(), logits.detach()

    def pooled_student_steps(self, x, logits):
        """The batch into the pool, then the student's steps on augmented pool batches."""
        slots = torch.randint(0, len(self.pool), (len(x),))
        self.pool[slots] = x.clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
        self.pool_logits[slots] = logits.float().cpu()
        for _ in range(self.s["student_steps"]):
            idx = torch.randint(0, len(self.pool), (self.s["student_batch_size"],))
            x = augment(self.pool[idx].to(self.device).float().div_(255), self.s["augment_crop"], True)
            self.student_step(x, self.pool_logits[idx].to(self.device))

    def condbn_iteration(self):
        self.pooled_student_steps(*self.condbn_generator_step())

    def fast_iteration(self):
        """A clone of the meta generator and fresh codes, optimised for inner_steps steps; their
        gradients summed into the meta generator (first-order MAML); the best batch pooled."""
        s = self.s
        fast = copy.deepcopy(self.gen)
        z = torch.randn(s["batch_size"], self.gen.latent_dim, device=self.device, requires_grad=True)
        targets = torch.randint(0, 10, (s["batch_size"],), device=self.device)
        inner = torch.optim.Adam([{"params": fast.parameters()}, {"params": [z], "lr": s["lr_latent"]}],
                                 lr=s["lr_generator"], betas=(0.5, 0.999))
        self.opt_g.zero_grad(set_to_none=True)
        best_loss, best_x, m = None, None, s["bn_momentum"]
        for _ in range(s["inner_steps"]):
            x = fast(z)
            view = augment(x, s["augment_crop"], True)
            logits = self.teach(view)
            stats = batch_statistics(self.bn_inputs)
            blended = stats if self.bn_memory is None else [
                ((1 - m) * mean + m * old_mean, (1 - m) * var + m * old_var)
                for (mean, var), (old_mean, old_var) in zip(stats, self.bn_memory)]
            self.student.eval()
            s_logits = self.student(view)
            self.student.train()
            agree = (s_logits.argmax(1) == logits.argmax(1)).float()
            kl = F.kl_div(F.log_softmax(s_logits, 1), F.softmax(logits, 1), reduction="none").sum(1)
            loss = (s["w_bn"] * bn_statistics_loss(blended, self.bn_running, s["w_first_bn"])
                    + s["w_onehot"] * F.cross_entropy(logits, targets) - s["w_adv"] * (kl * agree).mean())
            if best_loss is None:
                best_loss, best_x = loss.detach(), x.detach()
            else:
                better = loss.detach() < best_loss
                best_loss, best_x = torch.where(better, loss.detach(), best_loss), torch.where(better, x.detach(), best_x)
            inner.zero_grad(set_to_none=True)
            loss.backward()
            for meta_p, fast_p in zip(self.gen.parameters(), fast.parameters()):
                if fast_p.grad is not None:
                    meta_p.grad = fast_p.grad.clone() if meta_p.grad is None else meta_p.grad + fast_p.grad
            inner.step()
        self.opt_g.step()
        new = [(mean.detach(), var.detach()) for mean, var in stats]
        self.bn_memory = new if self.bn_memory is None else [
            (m * old_mean + (1 - m) * mean, m * old_var + (1 - m) * var)
            for (old_mean, old_var), (mean, var) in zip(self.bn_memory, new)]
        with torch.no_grad():
            logits = self.teach(best_x)
        self.pooled_student_steps(best_x, logits)

    def generator_update(self, loss):
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()

    def sample(self):
        if self.procedural is not None:
            return self.procedural.sample(self.s["batch_size"])[0]
        return self.gen(torch.randn(self.s["batch_size"], self.gen.latent_dim, device=self.device))

    def sample_with_labels(self):
        """A batch from the conditional generator and the classes it was asked for."""
        labels = torch.randint(0, 10, (self.s["batch_size"],), device=self.device)
        return self.gen(torch.randn(self.s["batch_size"], self.gen.latent_dim, device=self.device), labels), labels

    def streaming_student_steps(self, x, logits, loss_of=None):
        """The student's steps of a streaming method: the synthesized batch, then fresh ones."""
        for step in range(self.s["student_steps"]):
            if step:
                with torch.no_grad():
                    x = self.sample()
                    logits = self.teach(x)
            self.student_step(x.detach(), logits.detach(), loss_of)
        self.turn += 1
        self.gen = self.gens[self.turn % len(self.gens)]

    def dafl_iteration(self):
        s = self.s
        x = self.sample()
        logits = self.teach(x)
        self.generator_update(s["w_onehot"] * F.cross_entropy(logits, logits.argmax(1))
                              + s["w_entropy"] * negative_entropy_of_mean(logits)
                              - s["w_activation"] * self.features[-1].flatten(1).abs().mean())
        self.streaming_student_steps(x, logits)

    def bnstats_iteration(self):
        s = self.s
        x = self.sample()
        logits = self.teach(x)
        self.generator_update(s["w_bn"] * gaussian_kl_loss(batch_statistics(self.bn_inputs), self.bn_running)
                              + s["w_onehot"] * F.cross_entropy(logits, logits.argmax(1))
                              + s["w_entropy"] * negative_entropy_of_mean(logits))
        self.streaming_student_steps(x, logits)

    def ddad_iteration(self):
        s = self.s
        x = self.sample()
        logits = self.teach(x)
        bn = bn_statistics_loss(batch_statistics(self.bn_inputs), self.bn_running, s["w_first_bn"])
        self.generator_update(s["w_bn"] * bn - s["w_adv"] * discrepancy(self.student(x), logits))
        self.streaming_student_steps(x, logits, discrepancy)

    def cgdd_iteration(self):
        """Streaming; the student's loss needs the teacher's stage outputs, so each of its
        batches, the synthesized one too, goes through the teacher again."""
        s = self.s
        x, labels = self.sample_with_labels()
        logits = self.teach(x)
        self.generator_update(s["w_label"] * F.cross_entropy(logits, labels)
                              - s["w_adv"] * discrepancy(self.student(x), logits))
        for step in range(s["student_steps"]):
            with torch.no_grad():
                if step:
                    x, labels = self.sample_with_labels()
                logits = self.teach(x.detach())
                teacher_maps = dict(self.teacher_maps)

            def loss_of(out, logits, labels=labels, teacher_maps=teacher_maps):
                attention = sum(((attention_map(self.student_maps[size]) - attention_map(t)) ** 2).mean()
                                for size, t in teacher_maps.items() if size in self.student_maps)
                return (kd_loss(out, logits, s["temperature"]) + s["w_student_label"] * F.cross_entropy(out, labels)
                        + s["w_attention"] * attention)
            self.student_step(x.detach(), logits, loss_of)
        self.turn += 1
        self.gen = self.gens[self.turn % len(self.gens)]

    def proxy_iteration(self):
        """IDEAL through the student, plus the teacher's cross-entropy towards the preset class
        by forward differences; the teacher only queried (no_grad). Pooled."""
        s = self.s
        x, labels = self.sample_with_labels()
        logits = self.student(x)
        loss = F.cross_entropy(logits, labels) + s["w_entropy"] * negative_entropy_of_mean(logits)
        with torch.no_grad():
            answers = self.teach(x)

        def towards_labels(z):
            return cross_entropy_per_image(z, labels).clamp(max=10.0)
        probe = x.detach().requires_grad_(True)
        prior, = torch.autograd.grad(towards_labels(self.student(probe)).sum(), probe)
        grad = forward_difference_gradient(self.teach, x, answers, towards_labels, s["zo_sigma"], prior)
        self.generator_update(loss + s["w_teacher"] * (grad * x).sum() / len(x))
        self.pooled_student_steps(x.detach(), answers)

    def procedural_iteration(self):
        """No generator to train: children of the population and fresh images, the teacher's
        answers, the population's update, the student's steps."""
        n = self.s["batch_size"]
        children = round(n * self.s["population_share"])
        with torch.no_grad():
            fresh = self.procedural.sample(n + children)[0]
            grown = self.population.offspring(fresh[:children], fresh[n:])
            x = torch.cat([grown, fresh[children:n]]).contiguous(memory_format=MEMORY_FORMAT)
            logits = self.teach(x)
            self.population.admit(x, logits.argmax(1))
        self.streaming_student_steps(x, logits)

    def dafl_zo_iteration(self):
        """The teacher only queried (no_grad): its gradient by forward differences."""
        x = self.sample()
        with torch.no_grad():
            answers = self.teach(x)
        objective = objective_per_image(answers, self.s)
        probe = x.detach().requires_grad_(True)
        prior, = torch.autograd.grad(objective(self.student(probe)).sum(), probe)
        grad = forward_difference_gradient(self.teach, x, answers, objective, self.s["zo_sigma"], prior)
        self.generator_update((grad * x).sum() / len(x))
        self.streaming_student_steps(x, answers)


def best_of_rounds(ours, theirs) -> dict:
    """Images per second of each side, measured in ROUNDS alternated rounds, and each side's
    fastest: the machine's noise only ever slows a round (here, at 2 threads, rounds of the same
    code differed by up to 70 %), so the fastest is the least disturbed (timeit's advice). Every
    round is kept."""
    rounds = {"edgekd": [], "hand_written": []}
    for _ in range(ROUNDS):
        rounds["edgekd"].append(ours())
        rounds["hand_written"].append(theirs())
    return {**{side: max(speeds) for side, speeds in rounds.items()}, "rounds": rounds}


def iteration_images(settings) -> int:
    return settings["batch_size"] + settings["student_steps"] * (
        settings["student_batch_size"] if settings["pool_size"] else settings["batch_size"])


def edgekd_iterations(teacher_path, case, method, device_name, precision, compile_, iterations, folder) -> float:
    """Images per second of `edgekd distill` over `iterations` iterations after
    WARMUP_ITERATIONS (the training clock it reports, of two runs)."""
    _, student, shape = CASES[case]
    teacher = load_teacher(teacher_path)
    settings = resolve_settings(method, {}, {"synthesis_only": 0.0, "synthesis_until": 1.0})
    probe = Dataset(torch.rand(64, *shape), torch.zeros(64, dtype=torch.long), None, "random")

    def seconds(n: int) -> float:
        config = new_config(teacher, student=student, method=method, settings=dict(settings), budget=Budget(n, None),
                            eval_data=None, mean=None, std=None, device=device_name, seed=0,
                            checkpoint_every=(10 ** 9, None), eval_every=(10 ** 9, None), recipe=None,
                            teacher_arch=None, precision=precision, compile=compile_)
        out = folder / f"{method}-{n}"
        shutil.rmtree(out, ignore_errors=True)
        return distill(teacher, config, out, probe, show_progress=False, log=lambda *a: None)["wall_seconds"]

    timed_seconds = seconds(WARMUP_ITERATIONS + iterations) - seconds(WARMUP_ITERATIONS)
    return iterations * iteration_images(settings) / timed_seconds


def hand_iterations(module, case, method, device, seconds, autocast, compile_) -> float:
    loop = HandWritten(module, CASES[case][1], CASES[case][2], device, method, compile_)
    with torch.autocast(**autocast):
        speed = timed(getattr(loop, f"{method.replace('-', '_')}_iteration"), device, seconds, iteration_images(loop.s))
    loop.close()
    return speed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="cifar10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile both edgekd's and the hand-written models")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, all cores)")
    parser.add_argument("--seconds", type=float, default=6.0, help="time per stage and side (in 3 alternated rounds)")
    parser.add_argument("--iterations", type=int, default=50, help="edgekd distill iterations per method")
    parser.add_argument("--methods", default="condbn,bnstats,fast,ddad,dafl,cgdd,dafl-zo,procedural,proxy")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = pick_precision(args.precision, device)
    autocast = dict(device_type=device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")
    torch.manual_seed(0)
    _, student_arch, shape = CASES[args.case]
    module = teacher_module(args.case)
    folder = Path(tempfile.mkdtemp(prefix="edgekd-throughput-"))
    save_export(module, shape, folder / "teacher.pt2")
    teacher = load_teacher(folder / "teacher.pt2").to(device, MEMORY_FORMAT)
    module = module.to(device, memory_format=MEMORY_FORMAT)
    for p in list(module.parameters()) + list(teacher.graph.parameters()):
        p.requires_grad_(False)
    student = create_student(student_arch, shape[0], 10, shape[1:]).to(device, memory_format=MEMORY_FORMAT)
    method = METHODS.get("condbn")(teacher, student, resolve_settings("condbn", {}, {}), device,
                                   fp16=precision == "fp16")
    method.generators.to(memory_format=MEMORY_FORMAT)
    if args.compile:
        teacher.compiled = True
        for m in (module, student, *method.generators):
            m.compile()
    hand = HandWritten(module, student_arch, shape, device, "condbn", args.compile)

    x = torch.rand(SYNTH_BATCH, *shape, device=device)
    xs = torch.rand(STUDENT_BATCH, *shape, device=device)
    logits = torch.randn(STUDENT_BATCH, 10, device=device)
    labels = torch.randint(0, 10, (STUDENT_BATCH,), device=device)

    def backward_to_input(forward):
        def step():
            xg = x.clone().requires_grad_(True)
            forward(xg).sum().backward()
        return step

    stages = [
        ("teacher forward", SYNTH_BATCH, lambda: teacher.run(x), lambda: hand.teach(x), torch.no_grad),
        ("teacher forward+backward", SYNTH_BATCH, backward_to_input(lambda v: teacher.run(v).logits),
         backward_to_input(hand.teach), contextlib.nullcontext),
        ("student step", STUDENT_BATCH, lambda: method.student_step(xs, TeacherOutput(logits, None, [], []), labels),
         lambda: hand.student_step(xs, logits), contextlib.nullcontext),
        ("generator step (condbn)", SYNTH_BATCH, lambda: method.generator_step(0, False),
         hand.condbn_generator_step, contextlib.nullcontext),
    ]
    rows = []
    console = Console()
    for name, images, ours, theirs, context in stages:
        with torch.autocast(**autocast), context():
            rows.append({"what": name, **best_of_rounds(lambda: timed(ours, device, args.seconds / ROUNDS, images),
                                                        lambda: timed(theirs, device, args.seconds / ROUNDS, images))})
        console.print(f"{name}: {rows[-1]['edgekd']:.0f} vs {rows[-1]['hand_written']:.0f} img/s")
    hand.close()
    for name in args.methods.split(","):
        rows.append({"what": f"iteration: {name}", **best_of_rounds(
            lambda: edgekd_iterations(folder / "teacher.pt2", args.case, name, str(device), precision, args.compile,
                                      args.iterations, folder),
            lambda: hand_iterations(module, args.case, name, device, args.seconds / ROUNDS, autocast, args.compile))})
        console.print(f"{rows[-1]['what']}: {rows[-1]['edgekd']:.0f} vs {rows[-1]['hand_written']:.0f} img/s")

    table = Table(title=f"throughput, {args.case}, {device} ({torch.get_num_threads()} threads), {precision}"
                        + (", compiled" if args.compile else ""))
    for col in ("", "edgekd img/s", "hand-written img/s", "edgekd / hand"):
        table.add_column(col, justify="left" if not col else "right")
    for r in rows:
        r["ratio"] = round(r["edgekd"] / r["hand_written"], 3)
        table.add_row(r["what"], f"{r['edgekd']:.0f}", f"{r['hand_written']:.0f}", f"{r['ratio']:.2f}")
    console.print(table)
    out = args.out or ROOT / "benchmarks/results" / f"throughput_{args.case}_{device.type}_{precision}.json"
    write_json(out, {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                     "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                     "threads": torch.get_num_threads(), "precision": precision, "compile": args.compile,
                     "case": args.case, "command": " ".join(["python", *sys.argv]), "rows": rows})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
