"""`edgekd distill`: the training loop, reading top to bottom.

Run directory: config.yaml (every resolved setting), checkpoint.pt (resume state, rewritten
atomically), metrics.jsonl (one line per evaluation), teacher_queries.txt (under --max-queries:
the queries spent, written before each teacher call), and at the end student.pt2, student.pt,
generator.pt and summary.json.
"""
import contextlib
import copy
import json
import math
import random
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from . import __version__
from .distributed import Ranks
from .errors import EdgekdError, Interrupted
from .fileio import append_line, torch_save, write_json, write_text, write_yaml
from .methods import METHODS
from .methods.base import CHOICES, COMMON_DEFAULTS
from .inversion import invert
from .pool import Pool, augment, entry_bytes
from .progress import Progress
from .students import create_student
from .teacher import QueryBudgetSpent, Teacher, TeacherOutput

MAX_ROLLBACKS = 3
EVAL_LIMIT = 2000  # samples scored at each periodic evaluation (the final one scores all)
# Without eval data: images inverted from the teacher (inversion.py), for augment_flip=auto and
# the student's agreement with the teacher on them, kept in metrics.jsonl as probe_agreement.
# 128 images: on the CIFAR-10 ResNet-56 (2 cores) 44 s instead of 90 s for 256, and the same
# flip decisions (68.8 % and 14.1 % of mirrored probe images keep their class, ResNet-56 and
# the MNIST LeNet-5, against 67.6 % and 15.2 % with 256).
PROBE_SIZE, PROBE_STEPS = 128, 30
# That agreement is no estimate of quality: the README's first command (condbn, 3 min, lenet5_half)
# ended at 14.45 % on the probe set for a student scoring 95.13 % on the MNIST test set, and it
# wandered between 10 and 25 % as training went. Until a no-data estimate is shown to track real
# top-1, none is shown.
NO_DATA_QUALITY = "not estimated without data (pass --eval-data to measure top-1)"
# augment_flip=auto turns flips on when the teacher keeps its class for at least this share of
# mirrored eval or probe images. The CIFAR-10 ResNet-56 keeps 93 % of 512 test photos and 69 %
# of its probe set; the MNIST LeNet-5 keeps 40 % of test digits and 14 % of its probe set
# (digits are not mirror-symmetric). Half sits between the two kinds of teacher.
FLIP_AGREEMENT = 0.5
# Teacher, student and generators run channels_last (NHWC) on every device: cuDNN's tensor-core
# convolutions want it, and on this 2-core CPU (oneDNN, torch 2.14) a whole iteration ran 1.06 to
# 1.34 times as fast on MNIST and 1.13 to 1.23 on CIFAR-10, every method (the generator's nearest
# upsampling alone, 128 x 128 x 14 x 14, 200 ms in NCHW, 13 ms in NHWC).
MEMORY_FORMAT = torch.channels_last


@dataclass
class Budget:
    iterations: int | None
    minutes: float | None

    def fraction(self, iteration: int, seconds: float) -> float:
        parts = []
        if self.iterations:
            parts.append(iteration / self.iterations)
        if self.minutes:
            parts.append(seconds / (60 * self.minutes))
        return max(parts)


def resolve_settings(method: str, recipe_settings: dict, overrides: dict) -> dict:
    """Common defaults <- the method's paper defaults <- the recipe <- command-line overrides."""
    cls = METHODS.get(method)
    settings = {**COMMON_DEFAULTS, **cls.defaults}
    for source, values in (("recipe", recipe_settings), ("--set", overrides)):
        for key, value in values.items():
            if key not in settings:
                raise EdgekdError(f"unknown setting '{key}' in {source} for method {method}; "
                                  f"known: {', '.join(sorted(settings))}")
            settings[key] = type(settings[key])(value) if isinstance(settings[key], (int, float)) and \
                not isinstance(settings[key], bool) else value
            if key in CHOICES and settings[key] not in CHOICES[key]:
                raise EdgekdError(f"setting {key}={value} in {source}: choose one of "
                                  f"{', '.join(str(c).lower() for c in CHOICES[key])}")
    return settings


# Batches the user did not set hold at most as many pixels as these many 224 x 224 images. The
# 224-px case of benchmarks/large_inputs.py (MobileNetV2 teacher and student) peaked at 6.1 GB
# with them, where 64 images of 224 x 224 through a MobileNetV2's backward alone took 9.3 GB.
# Inputs up to 96 x 96 keep every method's batches.
BATCH_PIXELS = {"batch_size": 16 * 224 * 224, "student_batch_size": 32 * 224 * 224}


def batches_for_input(settings: dict, input_shape, given) -> list[str]:
    """Shrinks the batches not in `given` (set by a recipe or --set) to BATCH_PIXELS; returns
    the settings changed, as key=value."""
    pixels = input_shape[1] * input_shape[2]
    changed = []
    for key, most in BATCH_PIXELS.items():
        cap = max(2, most // pixels)  # BatchNorm statistics need two images
        if key not in given and settings[key] > cap:
            settings[key] = cap
            changed.append(f"{key}={cap}")
    return changed


def device_type(name: str) -> str:
    """The kind of device --device names, before any rank is placed on one."""
    return "cuda" if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()) else "cpu"


def pick_device(name: str, ranks: Ranks = Ranks()) -> torch.device:
    """auto | cpu | cuda | cuda:N; under torchrun, `cuda` is this rank's local GPU."""
    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", name)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise EdgekdError(f"--device takes auto, cpu, cuda or cuda:N, not '{name}'")
    if device_type(name) == "cpu":
        if match.group(1) == "cuda":
            raise EdgekdError(f"--device {name} asked for, but torch sees no CUDA GPU; use --device cpu")
        return torch.device("cpu")
    if match.group(2) is not None and ranks.world > 1:
        raise EdgekdError(f"--device {name}: under torchrun each process takes its local GPU; use --device cuda")
    index = int(match.group(2)) if match.group(2) is not None else ranks.local_rank
    if index >= torch.cuda.device_count():
        raise EdgekdError(f"--device cuda:{index} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that support it (no loss scaling needed), fp32 on the CPU, where
    autocast's conversions cost more than they save."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise EdgekdError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return name


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """The random state training draws from: the CPU's, and the GPU's when it runs on one."""
    return {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}


def set_rng_state(state: dict, device: torch.device):
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def to_cpu(tree):
    return torch.utils._pytree.tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, tree)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM (what schedulers such as SLURM send before a kill) asks the
    loop to stop after the current iteration, so the checkpoint it then writes is a consistent
    one. A second Ctrl-C of a single process stops at once (the last checkpoint stays); under
    torchrun the signal reaches every rank, more than once, and each rank waits for its
    iteration to end."""

    def __init__(self, world: int):
        self.asked, self.world, self.previous = False, world, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.asked and self.world == 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.asked = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def new_config(teacher: Teacher, *, student, method, settings, budget, eval_data, mean, std,
               device, seed, checkpoint_every, eval_every, recipe, teacher_arch, max_queries=None,
               teacher_timeout=60.0, precision="auto", compile=False) -> dict:
    """`checkpoint_every` and `eval_every` are (iterations or None, minutes or None)."""
    return {
        "edgekd_version": __version__,
        "teacher": {"path": teacher.source, "sha256": teacher.sha256, "format": teacher.format,
                    "arch": teacher_arch, "input_shape": list(teacher.input_shape),
                    "num_classes": teacher.num_classes, "access": sorted(teacher.access),
                    "backend": teacher.backend, "output": teacher.output, "timeout": teacher_timeout},
        # Most samples the teacher may be asked about during training (None: no limit).
        "max_queries": max_queries,
        # Models here take inputs in [0, 1], minus mean, over std (per channel), when they are set.
        "preprocessing": {"range": [0, 1], "mean": mean, "std": std},
        "student": student, "method": method, "recipe": recipe,
        "eval_data": str(Path(eval_data).resolve()) if eval_data else None,
        "iterations": budget.iterations, "time_budget_minutes": budget.minutes,
        "checkpoint_every": checkpoint_every[0], "checkpoint_every_minutes": checkpoint_every[1],
        "eval_every": eval_every[0], "eval_every_minutes": eval_every[1],
        "device": device, "precision": precision, "compile": compile, "seed": seed, "settings": settings,
    }


def normaliser(config: dict, inverse: bool = False):
    """[0, 1] images -> the teacher's inputs (or back, with `inverse`)."""
    mean, std = config["preprocessing"]["mean"], config["preprocessing"]["std"]
    if mean is None:
        return lambda x: x
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    if inverse:
        return lambda x: x * s.to(x.device) + m.to(x.device)
    return lambda x: (x - m.to(x.device)) / s.to(x.device)


def student_lr_factor(s: dict, fraction: float) -> float:
    """The student's learning-rate multiplier; its schedule spans the student's share of the
    budget (after synthesis_only)."""
    start = s["synthesis_only"]
    progress = min(max((fraction - start) / (1 - start), 0.0), 1.0) if start < 1 else 0.0
    if s["lr_schedule"] == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return s["lr_gamma"] ** sum(progress >= m for m in s["lr_milestones"])


@torch.no_grad()
def predictions(model, inputs, batch_size=500) -> torch.Tensor:
    return torch.cat([model(inputs[i:i + batch_size]).argmax(1).cpu() for i in range(0, len(inputs), batch_size)])


def flip_agreement(teacher, inputs, n: int = 512) -> float:
    """How often the teacher gives a horizontally mirrored input the class it gives the input."""
    x = inputs[:n]
    return (predictions(teacher, x) == predictions(teacher, x.flip(3))).float().mean().item()


def smooth_noise(n: int, shape, seed: int) -> torch.Tensor:
    """n images in [0, 1] of random colour blobs (8x8 noise, upsampled): the probe set of a
    teacher without gradients to invert."""
    c, h, w = shape
    coarse = torch.rand(n, c, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def comparison_set(teacher, config, eval_set, out: Path, device, log, ranks: Ranks = Ranks()
                 ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(teacher inputs, teacher predictions, name) the student is compared with the teacher on,
    the same for every method: the eval data when given; otherwise a probe set fixed per teacher (images
    inverted from the teacher for balanced classes, or smooth noise for a query-only teacher,
    seeded by its sha256), kept in the run directory so a resumed run scores on the same images."""
    to_model = normaliser(config)
    if eval_set is not None:
        x = to_model(eval_set.x.to(device))
        return x, predictions(teacher, x), "eval data"
    path = out / "fidelity_probe.pt"
    seed = int(teacher.sha256[:8], 16)
    if ranks.main and not path.exists() and "gradients" not in teacher.access:
        torch_save(path, smooth_noise(PROBE_SIZE, teacher.input_shape, seed).mul(255).round().to(torch.uint8))
    if ranks.main and not path.exists():
        log(f"making the probe set ({PROBE_SIZE} images inverted from the teacher) ...")
        pixels = invert(teacher, PROBE_SIZE, to_model, seed, PROBE_STEPS, class_targets=True)
        torch_save(path, pixels.mul(255).round().to("cpu", torch.uint8))  # stored as images are
    ranks.barrier()  # the other ranks read what rank 0 wrote
    x = to_model(torch.load(path, weights_only=True).to(device).float() / 255)
    return x, predictions(teacher, x), "probe set"


def distill(teacher: Teacher, config: dict, out: Path, eval_set=None, resume: bool = False,
            show_progress: bool = True, log=print, ranks: Ranks = Ranks()) -> dict:
    """Trains the student; returns the summary (on rank 0; {} on the other ranks).
    `config` is new_config()'s (or config.yaml's)."""
    device = pick_device(config["device"], ranks)
    precision = pick_precision(config.get("precision", "auto"), device)
    s = config["settings"]
    budget = Budget(config["iterations"], config["time_budget_minutes"])
    if ranks.world > 1 and config.get("max_queries") is not None:
        raise EdgekdError("--max-queries counts the queries of one process; run it without torchrun")
    seed_everything(config["seed"] + ranks.rank)  # each rank its own generators and pool share
    teacher.to(device, MEMORY_FORMAT)
    for p in teacher.graph.parameters() if teacher.graph is not None else []:
        p.requires_grad_(False)
    c, h, w = teacher.input_shape
    student = create_student(config["student"], c, teacher.num_classes, (h, w)).to(device, memory_format=MEMORY_FORMAT)
    trained = student
    if ranks.world > 1:  # gradients averaged over the ranks; rank 0's weights broadcast at the start
        from torch.nn.parallel import DistributedDataParallel
        trained = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    pre = config["preprocessing"]
    method_class = METHODS.get(config["method"])
    if precision == "fp16" and not method_class.loss_scaling:
        raise EdgekdError(f"--precision fp16: method {config['method']} has no loss scaling; use bf16 or fp32")
    method = method_class(teacher, trained, s, device, pre["mean"], pre["std"], fp16=precision == "fp16")
    method.generators.to(memory_format=MEMORY_FORMAT)
    if config.get("compile"):
        teacher.compiled = True
        trained.compile()
        for g in method.generators:
            g.compile()
    to_model, to_pixels = normaliser(config), normaliser(config, inverse=True)
    pool = None
    if s["pool_size"]:  # each rank holds its share, so that the machine holds pool_memory_mb in all
        asked = -(-s["pool_size"] // ranks.world)
        fits = s["pool_memory_mb"] * 2 ** 20 // (entry_bytes(teacher.input_shape, teacher.num_classes) * ranks.world)
        capacity = min(asked, fits)
        if capacity < 1:
            raise EdgekdError(f"pool_memory_mb={s['pool_memory_mb']} holds no {c}x{h}x{w} image; raise it")
        if capacity < asked and ranks.main:
            log(f"pool: {capacity * ranks.world:,} images of {c}x{h}x{w} fit in pool_memory_mb={s['pool_memory_mb']} "
                f"(pool_size={s['pool_size']:,} asked for more)")
        pool = Pool(capacity, teacher.input_shape, teacher.num_classes)

    iteration, seconds, rollbacks, lr_scale, queries = 0, 0.0, 0, 1.0, 0
    checkpoint_path, pool_path, ledger_path = out / "checkpoint.pt", out / "pool.pt", out / "teacher_queries.txt"
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if "ranks" not in state:
            raise EdgekdError(f"{checkpoint_path} was written by an older edgekd; start the run again")
        ranks.check_resumable(state["world_size"])
        mine = state["ranks"][ranks.rank]
        student.load_state_dict(mine["student"])
        method.load_state_dict(mine["method"])
        iteration, seconds, rollbacks, lr_scale = (state["iteration"], state["seconds"], state["rollbacks"],
                                                   state["lr_scale"])
        queries = state["teacher_queries"]
        set_rng_state(mine["rng"], device)
        if pool is not None and pool_path.exists():
            pool.load_state_dict(torch.load(pool_path, weights_only=True)["ranks"][ranks.rank])
        if ranks.main:
            keep_metrics_until(out / "metrics.jsonl", iteration)
        log(f"resumed {out} at iteration {iteration} ({seconds / 60:.1f} min trained"
            + (f", {len(pool)} pooled images)" if pool is not None else ")"))
    elif ranks.main:  # a new run, or one stopped before its first checkpoint
        out.mkdir(parents=True, exist_ok=True)
        write_yaml(out / "config.yaml", config)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    compared_inputs, teacher_predictions, compared_on = comparison_set(teacher, config, eval_set, out, device, log, ranks)
    if s["augment_flip"] == "auto":  # decided again, identically, on --resume
        kept = flip_agreement(teacher, compared_inputs)
        s["augment_flip"] = kept >= FLIP_AGREEMENT
        log(f"augment_flip=auto: a mirrored image keeps the teacher's class {100 * kept:.0f} % of the time on "
            f"the {compared_on}, so flips are {'on' if s['augment_flip'] else 'off'}")
    # Queries made so far (loading, the fidelity set's labels, the flip test) are outside the budget.
    queries_not_budgeted = teacher.queries
    teacher.queries, teacher.query_limit = queries, config.get("max_queries")
    if teacher.query_limit is not None:
        # Queries made after the last checkpoint were spent all the same: the ledger, written
        # before each call, keeps them counted across a kill.
        if ledger_path.exists():
            teacher.queries = max(queries, int(ledger_path.read_text() or 0))
        teacher.before_query = lambda total: write_text(ledger_path, str(total))
    # Under a query budget, the student goes on learning from the pool once it is spent.
    learns_without_teacher = pool is not None and s["pool_logits"] == "cached" and not method.student_needs
    queries_spent = teacher.query_limit is not None and teacher.queries >= teacher.query_limit

    def rollback_point():
        """The student and method as they are now (copied), for a roll-back after NaN losses."""
        return copy.deepcopy({"student": student.state_dict(), "method": method.state_dict(), "iteration": iteration})

    def rank_state():
        """This rank's part of a checkpoint: the student, its own generators and optimizers, its
        random state."""
        return {"student": student.state_dict(), "method": method.state_dict(), "rng": rng_state(device)}

    def save_checkpoint():
        states = ranks.gather(to_cpu(rank_state()))
        pools = ranks.gather(pool.state_dict()) if pool is not None else None
        if ranks.main:
            if pools is not None:  # first: a checkpoint never refers to images the pool file lacks
                torch_save(pool_path, {"ranks": pools})
            torch_save(checkpoint_path, {"world_size": ranks.world, "ranks": states, "iteration": iteration,
                                         "seconds": seconds, "rollbacks": rollbacks, "lr_scale": lr_scale,
                                         "teacher_queries": teacher.queries})

    def evaluate(limit=None) -> dict:
        student.eval()
        n = min(limit or len(compared_inputs), len(compared_inputs))
        predicted = predictions(student, compared_inputs[:n])
        agreement = round(100.0 * (predicted == teacher_predictions[:n]).float().mean().item(), 2)
        if eval_set is None:
            result = {"probe_agreement": agreement}
        else:
            result = {"fidelity": agreement,
                      "student_top1": round(100.0 * (predicted == eval_set.y[:n]).float().mean().item(), 2)}
        student.train()
        return result

    def teacher_on(x, cached_logits=None):
        """The teacher's view of a student batch: cached logits when the method's loss needs
        nothing else, else a fresh forward pass."""
        if cached_logits is not None and s["pool_logits"] == "cached" and not method.student_needs:
            return TeacherOutput(cached_logits.to(device), None, [], [])
        with torch.no_grad():
            return teacher.run(x, maps="maps" in method.student_needs)

    def synthesize(fraction, student_training):
        """The iteration's synthesis (a generator update, or samples from the frozen generators
        after synthesis_until), pooled when there is a pool. Under DDP the student's gradients
        from a generator update stay local: only student steps average them."""
        with trained.no_sync() if ranks.world > 1 else contextlib.nullcontext():
            if fraction < s["synthesis_until"]:
                synth = method.generator_step(iteration, student_training)
            else:
                synth = method.frozen_step(iteration)
        if pool is not None:
            logits = synth.logits if synth.logits is not None else teacher_on(synth.x).logits
            pool.add(to_pixels(synth.x), logits, synth.labels)
        return synth

    def student_batches(synth):
        """The student's batches for one iteration: from the pool (augmented), or, streaming,
        the synthesized batch and then fresh ones from the generators."""
        for step in range(s["student_steps"]):
            if pool is not None:
                pixels, logits, labels = pool.sample(s["student_batch_size"])
                x = to_model(augment(pixels.to(device, non_blocking=True), s["augment_crop"], s["augment_flip"]))
                yield x, teacher_on(x, logits), labels.to(device)
            elif step == 0:
                yield synth.x, teacher_on(synth.x, synth.logits), synth.labels
            else:
                with torch.no_grad():
                    x, labels = method.generate(iteration)
                yield x, teacher_on(x), labels

    last_good = rollback_point()
    last_eval = {}
    eval_due = Every(config["eval_every"], config["eval_every_minutes"], seconds)
    checkpoint_due = Every(config["checkpoint_every"], config["checkpoint_every_minutes"], seconds)
    progress = Progress(budget, enabled=show_progress and ranks.main, log=log)
    start = time.perf_counter() - seconds  # the training clock (rank 0's); evaluations are not counted
    autocast = dict(device_type=device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")
    stop, stopping, stopped_at_once = StopRequest(ranks.world), False, False
    try:
        with progress, stop:
            while budget.fraction(iteration, seconds) < 1:
                if queries_spent and not (learns_without_teacher and len(pool)):
                    break
                fraction = budget.fraction(iteration, seconds)
                student_training = fraction >= s["synthesis_only"] or queries_spent
                method.set_lr_scale(lr_scale, lr_scale * student_lr_factor(s, fraction))
                try:
                    with torch.autocast(**autocast):
                        synth = None if queries_spent else synthesize(fraction, student_training)
                        losses = dict(synth.losses) if synth else {}
                        if student_training:
                            for x, teacher_out, labels in student_batches(synth):
                                # The student learns in float32: under bf16 a LeNet-5 student
                                # collapsed to one answer (11.7 % on MNIST where float32 gave 85 %,
                                # on CUDA and on the CPU alike); the teacher's passes, the costly
                                # part, keep the autocast precision.
                                with torch.autocast(device.type, enabled=False):
                                    losses.update(method.student_step(x.float(), tree_map(
                                        lambda t: t.float() if isinstance(t, torch.Tensor) else t, teacher_out), labels))
                except QueryBudgetSpent:
                    queries_spent = True
                    log(f"query budget spent: {teacher.queries:,} teacher queries at iteration {iteration}"
                        + ("; the student goes on learning from the pool" if learns_without_teacher else ""))
                    continue
                # The iteration's one host sync: its losses read back together.
                values = torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(())
                                      for v in losses.values()]).tolist() if losses else []
                losses = dict(zip(losses, values))
                iteration += 1
                seconds, stopping, non_finite = ranks.agree(time.perf_counter() - start, stop.asked,
                                                            not all(math.isfinite(v) for v in values), device)
                if non_finite:
                    rollbacks += 1
                    if rollbacks > MAX_ROLLBACKS:
                        raise EdgekdError(f"losses became NaN/inf {rollbacks} times even after lowering the "
                                          "learning rates; try smaller --set lr_generator / lr_student")
                    student.load_state_dict(last_good["student"])
                    method.load_state_dict(last_good["method"])
                    iteration, lr_scale = last_good["iteration"], lr_scale * 0.5
                    log(f"losses became non-finite; rolled back to iteration {iteration}, learning rates x0.5")
                    continue
                done = budget.fraction(iteration, seconds) >= 1
                if (eval_due(iteration, seconds) or done) and ranks.main:
                    paused = time.perf_counter()
                    last_eval = {"iteration": iteration, "seconds": round(seconds, 2),
                                 "teacher_queries": teacher.queries,
                                 "losses": {k: round(v, 5) for k, v in losses.items()},
                                 **evaluate(limit=EVAL_LIMIT)}
                    if pool is not None:
                        last_eval.update(pool_size=len(pool), pool_classes=pool.class_histogram())
                    append_line(out / "metrics.jsonl", json.dumps(last_eval))
                    start += time.perf_counter() - paused
                if checkpoint_due(iteration, seconds) or done or stopping:
                    paused = time.perf_counter()
                    save_checkpoint()
                    last_good = rollback_point()
                    start += time.perf_counter() - paused
                if stopping:
                    break
                progress.update(iteration, seconds, losses, s["batch_size"], last_eval,
                                teacher.queries, teacher.query_limit)
    except KeyboardInterrupt:
        stopped_at_once = True
    if stopped_at_once:
        raise Interrupted(f"interrupted at iteration {iteration}, at once: the last checkpoint stays",
                          f"continue with `edgekd distill --resume {out}`")
    if stopping:  # agreed by every rank
        raise Interrupted(f"interrupted at iteration {iteration}; checkpoint saved",
                          f"continue with `edgekd distill --resume {out}`")
    if not ranks.main:
        return {}

    log("final evaluation ...")
    final = evaluate()
    summary = {"run_dir": str(out), "method": config["method"], "student": config["student"], "iterations": iteration,
               "wall_seconds": round(seconds, 2), "rollbacks": rollbacks, "teacher_queries": teacher.queries,
               "max_queries": teacher.query_limit, "teacher_queries_not_budgeted": queries_not_budgeted,
               "device": str(device), "precision": precision, "processes": ranks.world}
    if pool is not None:
        summary["pool_size"] = len(pool)
        summary["augment_flip"] = s["augment_flip"]
    if eval_set is None:
        summary.update(quality=NO_DATA_QUALITY, probe_agreement=final["probe_agreement"])
    else:
        summary.update(fidelity=final["fidelity"], student_top1=final["student_top1"])
        summary["teacher_top1"] = round(100.0 * (teacher_predictions == eval_set.y).float().mean().item(), 2)
    finalise(out, student, method, config)
    write_json(out / "summary.json", summary)
    return summary


class Every:
    """When a periodic action (evaluation, checkpoint) falls due: every `iterations` iterations,
    and every `minutes` of training when set."""

    def __init__(self, iterations: int | None, minutes: float | None, seconds: float):
        self.iterations, self.period = iterations, 60 * minutes if minutes else None
        self.next = (seconds // self.period + 1) * self.period if self.period else math.inf

    def __call__(self, iteration: int, seconds: float) -> bool:
        by_time = seconds >= self.next
        if by_time:
            self.next = (seconds // self.period + 1) * self.period
        return by_time or bool(self.iterations and iteration % self.iterations == 0)


def finalise(out: Path, student, method, config):
    """Writes the deliverables: the student as a torch.export archive and as weights, and the
    generators (export calibration draws from them)."""
    from .teacher import save_export

    student = student.eval().cpu()
    c, h, w = config["teacher"]["input_shape"]
    pre = config["preprocessing"]
    save_export(student, (c, h, w), out / "student.pt2",
                {"mean": pre["mean"], "std": pre["std"], "teacher_sha256": config["teacher"]["sha256"],
                 "student": config["student"], "method": config["method"]})
    torch_save(out / "student.pt", {"name": config["student"], "in_channels": c,
                                    "num_classes": config["teacher"]["num_classes"], "input_size": [h, w],
                                    "state_dict": student.state_dict()})
    torch_save(out / "generator.pt", {**method.generators[0].settings(),
                                      "state_dicts": [g.cpu().state_dict() for g in method.generators]})


def keep_metrics_until(path: Path, iteration: int):
    """Drops evaluations made after the checkpoint a run resumes from (and a torn last line)."""
    from .fileio import write_text

    kept = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    write_text(path, "".join(k + "\n" for k in kept))


def parse_period(value, name: str, default: tuple) -> tuple:
    """'N' iterations or 'Mmin' minutes of training -> (N, None) or (None, M); None -> default."""
    if value is None:
        return default
    text = str(value).strip().lower()
    try:
        if text.endswith("min"):
            minutes = float(text[:-3])
            if minutes > 0:
                return None, minutes
        elif int(text) >= 1:
            return int(text), None
    except ValueError:
        pass
    raise EdgekdError(f"{name} takes a number of iterations (e.g. 200) or of minutes (e.g. 5min), not '{value}'")


def prepare_out_dir(out: Path, force: bool):
    if out.exists() and any(out.iterdir()):
        if not force:
            raise EdgekdError(f"run directory {out} exists; pass --force to replace it or "
                              f"--resume {out} to continue it")
        shutil.rmtree(out)
