"""The synthetic data pool: bounded with first-in-first-out eviction, and by bytes for large
images, stored as uint8, persisted in the run directory and carried across --resume, and off with
pool_size=0; a 224-pixel, 1,000-class teacher goes through distillation with its pool held by bytes."""
import json

import numpy as np
import torch
import yaml
from test_distill import edgekd_here
from torch import nn

from edgekd.distillation import batches_for_input
from edgekd.generators import load_generators
from edgekd.pool import Pool, augment, entry_bytes
from edgekd.teacher import save_export

QUICK = ["--set", "batch_size=16", "--set", "student_steps=2", "--set", "student_batch_size=16", "--no-progress"]


def batch(first: int, n: int = 4):
    """n 1x2x2 images whose pixels encode their insertion index, with logits voting for class index % 3."""
    index = torch.arange(first, first + n)
    pixels = (index.float() / 255).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return pixels, torch.nn.functional.one_hot(index % 3, 3).float() * 5, index % 3


def held(pool: Pool) -> list[int]:
    return sorted(pool.images[:len(pool), 0, 0, 0].tolist())


def test_pool_is_bounded_and_evicts_the_oldest_first():
    pool = Pool(10, (1, 2, 2), 3)
    for first in range(0, 16, 4):
        pool.add(*batch(first))
    assert len(pool) == 10 and pool.added == 16
    assert held(pool) == list(range(6, 16))  # 0..5 were the oldest
    assert pool.images.dtype == torch.uint8
    assert pool.class_histogram() == [4, 3, 3]  # argmax of the cached logits of 6..15 (index % 3)
    pixels, logits, labels = pool.sample(64)
    assert pixels.shape == (64, 1, 2, 2) and 0 <= pixels.min() and pixels.max() <= 1
    assert torch.equal(logits.argmax(1), labels)  # each sample keeps its own logits and label


def test_pool_state_round_trips():
    pool = Pool(10, (1, 2, 2), 3)
    for first in range(0, 12, 4):
        pool.add(*batch(first))
    restored = Pool(10, (1, 2, 2), 3)
    restored.load_state_dict(pool.state_dict())
    restored.add(*batch(12))  # eviction continues where it stopped
    pool.add(*batch(12))
    assert held(restored) == held(pool) == list(range(6, 16))
    assert torch.equal(restored.logits, pool.logits) and restored.added == pool.added
    # A full pool is checkpointed without a copy of its images (a copy doubles a large pool's memory).
    assert pool.state_dict()["images"].data_ptr() == pool.images.data_ptr()


def test_augment_shifts_and_flips_per_sample():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8)
    assert torch.equal(augment(x, 0, False), x)
    flipped = augment(x.repeat(64, 1, 1, 1), 0, True)
    mirrored = [torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flipped)]
    assert 10 < sum(mirrored) < 118  # about half, drawn per sample
    cropped = augment(x, 2, False, torch.Generator().manual_seed(1))
    assert cropped.shape == x.shape and not torch.equal(cropped, x)


def test_pool_is_written_bounded_and_resumed(tmp_path, capfd):
    out = tmp_path / "run"
    result = edgekd_here(capfd, "distill", "--method", "bnstats", "--iterations", 10, "--eval-every", 5, "--out", out,
                    "--set", "pool_size=100", *QUICK)
    assert result.returncode == 0, result.stderr
    state = torch.load(out / "pool.pt", weights_only=True)["ranks"][0]  # one process: one share
    assert state["added"] == 160 and state["images"].shape == (100, 1, 28, 28)
    assert state["images"].dtype == torch.uint8
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["pool_size"] for m in metrics] == [80, 100]
    assert sum(metrics[-1]["pool_classes"]) == 100 and len(metrics[-1]["pool_classes"]) == 10
    assert json.loads((out / "summary.json").read_text())["pool_size"] == 100

    result = edgekd_here(capfd, "distill", "--resume", out, "--iterations", 15, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "100 pooled images" in " ".join(result.stdout.split())
    assert torch.load(out / "pool.pt", weights_only=True)["ranks"][0]["added"] == 240  # continued, not restarted


def test_pool_size_zero_streams(tmp_path, capfd):
    out = tmp_path / "run"
    result = edgekd_here(capfd, "distill", "--method", "bnstats", "--iterations", 4, "--out", out, "--set", "pool_size=0", *QUICK)
    assert result.returncode == 0, result.stderr
    assert not (out / "pool.pt").exists()
    assert "pool_size" not in json.loads((out / "summary.json").read_text())
    assert "pool_size" not in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


class ImageNetSized(nn.Module):
    """A cheap teacher with ImageNet's input and output sizes and BatchNorm: two strided convs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1000))

    def forward(self, x):
        return self.body(x)


def test_a_224_pixel_teacher_distils_with_its_pool_bounded_by_bytes(tmp_path, capfd):
    torch.manual_seed(0)
    teacher = ImageNetSized()
    with torch.no_grad():  # BatchNorm statistics of something image-like, as a trained teacher has
        teacher.train()(torch.rand(64, 3, 224, 224))
    save_export(teacher, (3, 224, 224), tmp_path / "imagenet_sized.pt2")
    # A few labelled images to compare on: without them the probe set is inverted from the
    # teacher, 128 images at 224 px (20 s here; benchmarks/large_inputs.py measures that path).
    np.savez(tmp_path / "eval.npz", x=torch.rand(8, 3, 224, 224).numpy(), y=np.arange(8))
    out = tmp_path / "run"
    # The batches are left to their defaults, which shrink for 224 px (64 images of 224 x 224
    # through a MobileNetV2's backward took 9.3 GB); the student batch is given, and kept.
    result = edgekd_here(capfd, "distill", tmp_path / "imagenet_sized.pt2", "--student", "mobilenet", "--iterations", 3,
                         "--eval-data", tmp_path / "eval.npz", "--out", out, "--set", "pool_memory_mb=1",
                         "--set", "student_steps=2", "--set", "student_batch_size=16", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "input 224x224: batch_size=16 (batches hold at most the pixels" in " ".join(result.stdout.split())
    held_images = 2 ** 20 // entry_bytes((3, 224, 224), 1000)  # 6 images of 150,528 pixel bytes + 1,000 logits
    assert held_images == 6
    assert f"pool: {held_images} images of 3x224x224 fit in pool_memory_mb=1" in " ".join(result.stdout.split())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "condbn" and summary["pool_size"] == held_images
    settings = yaml.safe_load((out / "config.yaml").read_text())["settings"]
    assert settings["batch_size"] == 16 and settings["student_batch_size"] == 16
    generator, = load_generators(out / "generator.pt")
    images, labels = generator.sample(2)
    assert images.shape == (2, 3, 224, 224) and labels.shape == (2,)
    # Its linear layer projects to 7 x 7, not to a quarter of 224 (26 M weights at width 32).
    assert generator.init_size == (7, 7) and sum(p.numel() for p in generator.parameters()) < 1_000_000


def test_batches_shrink_for_large_inputs_unless_set():
    defaults = {"batch_size": 64, "student_batch_size": 128}
    settings = dict(defaults)
    assert batches_for_input(settings, (3, 32, 32), set()) == [] and settings == defaults
    assert batches_for_input(settings, (3, 96, 96), set()) == [] and settings == defaults
    assert batches_for_input(settings, (3, 224, 224), set()) == ["batch_size=16", "student_batch_size=32"]
    assert settings == {"batch_size": 16, "student_batch_size": 32}
    settings = dict(defaults)
    assert batches_for_input(settings, (3, 224, 224), {"batch_size"}) == ["student_batch_size=32"]
    assert settings["batch_size"] == 64
    settings = dict(defaults)
    assert batches_for_input(settings, (3, 2048, 2048), set()) == ["batch_size=2", "student_batch_size=2"]
