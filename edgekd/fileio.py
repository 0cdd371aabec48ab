"""Atomic writes: every artifact is written to a temporary file beside it, then renamed, so a crash
or Ctrl-C never leaves a half-written file."""
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
import yaml


def _atomic(path: Path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes):
    _atomic(path, lambda f: f.write(data))


def write_text(path, text: str):
    write_bytes(path, text.encode())


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_yaml(path, obj):
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def torch_save(path, obj):
    _atomic(path, lambda f: torch.save(obj, f))


def append_line(path, line: str):
    """Appends one line to a log (metrics.jsonl); a torn last line is skipped by its readers."""
    with open(path, "a") as f:
        f.write(line.rstrip("\n") + "\n")


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
