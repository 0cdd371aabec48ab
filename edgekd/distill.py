"""`edgekd distill`: the training loop, reading top to bottom.

Run directory: config.yaml (every resolved setting), checkpoint.pt (resume state, rewritten
atomically), metrics.jsonl (one line per evaluation), and at the end student.pt2, student.pt,
generator.pt and summary.json.
"""
import copy
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import EdgekdError
from .evaluate import agreement, top1
from .fileio import append_line, torch_save, write_json, write_yaml
from .methods import METHODS
from .methods.base import COMMON_DEFAULTS
from .progress import Progress
from .students import create_student
from .teacher import Teacher

MAX_ROLLBACKS = 3
HELD_OUT_SEED = 12345  # synthetic samples for fidelity come from noise never used in training


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
    return settings


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgekdError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_config(teacher: Teacher, *, student, method, settings, budget, eval_data, mean, std,
               device, seed, checkpoint_every, eval_every, recipe, teacher_arch) -> dict:
    return {
        "edgekd_version": __version__,
        "teacher": {"path": str(teacher.path.resolve()), "sha256": teacher.sha256, "format": teacher.format,
                    "arch": teacher_arch, "input_shape": list(teacher.input_shape),
                    "num_classes": teacher.num_classes, "access": sorted(teacher.access)},
        # Models here take inputs in [0, 1], minus mean, over std (per channel), when they are set.
        "preprocessing": {"range": [0, 1], "mean": mean, "std": std},
        "student": student, "method": method, "recipe": recipe,
        "eval_data": str(Path(eval_data).resolve()) if eval_data else None,
        "iterations": budget.iterations, "time_budget_minutes": budget.minutes,
        "checkpoint_every": checkpoint_every, "eval_every": eval_every,
        "device": device, "seed": seed, "settings": settings,
    }


def normaliser(config: dict):
    mean, std = config["preprocessing"]["mean"], config["preprocessing"]["std"]
    if mean is None:
        return lambda x: x
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return lambda x: (x - m.to(x.device)) / s.to(x.device)


def distill(teacher: Teacher, config: dict, out: Path, eval_set=None, resume: bool = False,
            show_progress: bool = True, log=print) -> dict:
    """Trains the student; returns the summary. `config` is new_config()'s (or config.yaml's)."""
    device = pick_device(config["device"])
    s = config["settings"]
    budget = Budget(config["iterations"], config["time_budget_minutes"])
    seed_everything(config["seed"])
    teacher.to(device)
    for p in teacher.graph.parameters():
        p.requires_grad_(False)
    c, h, w = teacher.input_shape
    student = create_student(config["student"], c, teacher.num_classes, (h, w)).to(device)
    pre = config["preprocessing"]
    method = METHODS.get(config["method"])(teacher, student, s, device, pre["mean"], pre["std"])
    normalise = normaliser(config)

    iteration, seconds, rollbacks, lr_scale = 0, 0.0, 0, 1.0
    checkpoint_path = out / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        student.load_state_dict(state["student"])
        method.load_state_dict(state["method"])
        iteration, seconds, rollbacks, lr_scale = (state["iteration"], state["seconds"], state["rollbacks"],
                                                   state["lr_scale"])
        torch.set_rng_state(state["rng"])
        keep_metrics_until(out / "metrics.jsonl", iteration)
        log(f"resumed {out} at iteration {iteration} ({seconds / 60:.1f} min trained)")
    else:  # a new run, or one stopped before its first checkpoint
        out.mkdir(parents=True, exist_ok=True)
        write_yaml(out / "config.yaml", config)
        (out / "metrics.jsonl").unlink(missing_ok=True)

    def training_state():
        return {"student": student.state_dict(), "method": method.state_dict(), "iteration": iteration,
                "seconds": seconds, "rollbacks": rollbacks, "lr_scale": lr_scale,
                "rng": torch.get_rng_state()}

    def save_checkpoint():
        torch_save(checkpoint_path, training_state())

    def evaluate(limit=None) -> dict:
        student.eval()
        held_out = method.sample(512, HELD_OUT_SEED)
        with torch.no_grad():
            result = {"fidelity": agreement(student, teacher, held_out)}
        if eval_set is not None:
            result["student_top1"] = top1(student, eval_set, normalise, device, limit)
        student.train()
        return result

    last_good = copy.deepcopy(training_state())
    last_eval = {}
    progress = Progress(budget, enabled=show_progress, log=log)
    start = time.perf_counter() - seconds
    interrupted = False
    try:
        with progress:
            while budget.fraction(iteration, seconds) < 1:
                fraction = budget.fraction(iteration, seconds)
                decay = s["lr_gamma"] ** sum(fraction >= m for m in s["lr_milestones"])
                method.set_lr_scale(lr_scale, lr_scale * decay)
                losses = method.step(iteration)
                iteration += 1
                seconds = time.perf_counter() - start
                if not all(math.isfinite(v) for v in losses.values()):
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
                if iteration % config["eval_every"] == 0 or done:
                    last_eval = {"iteration": iteration, "seconds": round(seconds, 2),
                                 "losses": {k: round(v, 5) for k, v in losses.items()},
                                 **evaluate(limit=2000)}
                    append_line(out / "metrics.jsonl", json.dumps(last_eval))
                if iteration % config["checkpoint_every"] == 0 or done:
                    save_checkpoint()
                    last_good = copy.deepcopy(training_state())
                progress.update(iteration, seconds, losses, s["batch_size"], last_eval)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        save_checkpoint()
        raise EdgekdError(f"interrupted at iteration {iteration}; checkpoint saved, continue with "
                          f"`edgekd distill --resume {out}`")

    log("final evaluation ...")
    final = evaluate()
    summary = {"method": config["method"], "student": config["student"], "iterations": iteration,
               "wall_seconds": round(seconds, 2), "fidelity": final["fidelity"],
               "rollbacks": rollbacks}
    if eval_set is not None:
        summary["student_top1"] = final["student_top1"]
        summary["teacher_top1"] = top1(teacher, eval_set, normalise, device)
    finalise(out, student, method, config)
    write_json(out / "summary.json", summary)
    return summary


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
    gen = method.generators[0]
    torch_save(out / "generator.pt", {"latent_dim": gen.latent_dim, "width": gen.width,
                                      "image_shape": list(gen.image_shape), "num_classes": gen.num_classes,
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


def prepare_out_dir(out: Path, force: bool):
    if out.exists() and any(out.iterdir()):
        if not force:
            raise EdgekdError(f"run directory {out} exists; pass --force to replace it or "
                              f"--resume {out} to continue it")
        shutil.rmtree(out)
