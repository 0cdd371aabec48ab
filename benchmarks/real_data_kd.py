"""Knowledge distillation on real images: the ceiling a data-free method is judged against (DFKD
papers report "KD with the original data" as their upper reference). Same teacher file, same
student, same training time as the data-free run it is compared with; time_to_accuracy.py
--reference real-data runs the two side by side, one core each.

    python benchmarks/real_data_kd.py TEACHER --student resnet20 --train half1.npz --scored half2.npz \
        --minutes 20 --out kd.json [--mean ... --std ...]

The student's recipe is condbn's (edgekd's default for teachers with BatchNorm): batch 128, SGD
0.1 with momentum 0.9 and weight decay 5e-4, cosine over the time budget, KL to the teacher at
T = 4, gradients clipped at norm 5; real images with a 4-pixel crop and, when the teacher keeps
its class on mirrored images (edgekd's augment_flip=auto test), a horizontal flip. Top-1 on the
scored images after every minute of training (evaluations are not counted as training time)."""
import argparse
import json
import math
import time

import torch

from edgekd.data import load_dataset
from edgekd.distillation import FLIP_AGREEMENT, flip_agreement, normaliser
from edgekd.evaluate import top1
from edgekd.fileio import write_json
from edgekd.methods.base import kd_loss
from edgekd.pool import augment
from edgekd.students import create_student
from edgekd.teacher import load_teacher, read_metadata

BATCH, LR, MOMENTUM, WEIGHT_DECAY, TEMPERATURE, CLIP, CROP = 128, 0.1, 0.9, 5e-4, 4.0, 5.0, 4


def real_data_kd(teacher_path, student_name, train_path, scored_path, minutes, mean=None, std=None, seed=0) -> dict:
    torch.manual_seed(seed)
    teacher = load_teacher(teacher_path)
    meta = read_metadata(teacher_path)
    to_model = normaliser({"preprocessing": {"mean": mean or meta.get("mean"), "std": std or meta.get("std")}})
    train, scored = load_dataset(train_path), load_dataset(scored_path)
    c, h, w = teacher.input_shape
    student = create_student(student_name, c, teacher.num_classes, (h, w))
    flip = flip_agreement(teacher, to_model(train.x)) >= FLIP_AGREEMENT
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
    budget, trained, steps, curve = 60 * minutes, 0.0, 0, []
    next_eval = 60.0
    while trained < budget:
        start = time.perf_counter()
        for group in opt.param_groups:  # cosine in training time, as edgekd's time budgets are
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * trained / budget))
        x = to_model(augment(train.x[torch.randint(len(train), (BATCH,))], CROP, flip))
        with torch.no_grad():
            target = teacher(x)
        loss = kd_loss(student(x), target, TEMPERATURE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP)
        opt.step()
        steps += 1
        trained += time.perf_counter() - start
        if trained >= next_eval or trained >= budget:
            next_eval += 60.0
            student.eval()
            with torch.no_grad():
                curve.append({"minutes": round(trained / 60, 2), "steps": steps, "top1": top1(student, scored, to_model)})
            student.train()
            print(f"real-data KD: {curve[-1]}", flush=True)
    return {"method": "KD on real images", "steps": steps, "flip": flip, "train_images": len(train),
            "curve": curve}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("teacher")
    ap.add_argument("--student", required=True)
    ap.add_argument("--train", required=True, help="labelled real images the student learns from (labels unused)")
    ap.add_argument("--scored", required=True, help="held-out real images it is scored on")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--mean", type=lambda v: [float(x) for x in v.split(",")])
    ap.add_argument("--std", type=lambda v: [float(x) for x in v.split(",")])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    result = real_data_kd(args.teacher, args.student, args.train, args.scored, args.minutes, args.mean, args.std)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))


if __name__ == "__main__":
    main()
