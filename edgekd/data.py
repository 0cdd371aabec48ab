"""Loading labelled image data (for evaluation) from the formats people actually have on disk.

`load_dataset(path)` looks at what `path` is and reads one of:
  1. an MNIST-style idx folder (MNIST, Fashion-MNIST), files raw or .gz;
  2. the CIFAR-10 "binary version" folder (`cifar-10-batches-bin`, or a parent holding it);
  3. an ImageFolder tree PATH/<class>/*.png|jpg|jpeg|bmp (or PATH/train|test/<class>/...);
  4. an .npz file with arrays `x`, `y` and optionally `class_names`.

Each format has one small loader returning numpy arrays (x as N,C,H,W uint8 or float, y as
integers); `_finish` then applies `limit`, validates labels and value range once, and converts to
float32 tensors in [0, 1]. Bad input of any kind becomes an EdgekdError with one line saying what is
wrong and what to do, never a numpy/gzip/Pillow traceback.
"""
from __future__ import annotations

import gzip
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekd.errors import EdgekdError

SPLITS = ("test", "train")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
# idx file stems per split (MNIST and Fashion-MNIST use the same names).
IDX_STEMS = {"test": "t10k", "train": "train"}
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_FILES = {"test": ["test_batch.bin"], "train": [f"data_batch_{i}.bin" for i in range(1, 6)]}
CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then R, G, B planes of 32x32
FORMATS_HINT = "pass an idx folder (MNIST), a CIFAR-10 binary folder, an ImageFolder tree or an .npz file"


@dataclass
class Dataset:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    class_names: list[str] | None
    source: str  # e.g. "idx folder /path (test split)"

    def __len__(self) -> int:
        return len(self.y)


def _error(path, problem: str) -> EdgekdError:
    return EdgekdError(f"cannot read eval data {path}: {problem}")


# ---------------------------------------------------------------------------------------------
# 1. idx (MNIST, Fashion-MNIST)


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _is_idx_folder(folder: Path) -> bool:
    return any(
        _idx_file(folder, f"{stem}-{kind}") for stem in IDX_STEMS.values() for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    )


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """One idx file as a uint8 array. Header: two zero bytes, type byte (0x08 = unsigned byte),
    number of dims, then each dim as a big-endian uint32; the data must be exactly prod(dims) bytes,
    which is what catches a truncated file."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut .gz is an EOFError
        raise _error(path, f"corrupt or truncated file ({e}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise _error(path, f"not an unsigned-byte idx file with {ndim} dimension(s) (bad magic number); download it again")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _error(path, "truncated idx header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise _error(path, f"header says {expected} data bytes for shape {dims} but the file has {len(raw) - header}; download it again")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _load_idx(folder: Path, split: str):
    stem = IDX_STEMS[split]
    images = _idx_file(folder, f"{stem}-images-idx3-ubyte")
    labels = _idx_file(folder, f"{stem}-labels-idx1-ubyte")
    if images is None or labels is None:
        raise _error(
            folder,
            f"no {split} split: expected {stem}-images-idx3-ubyte and {stem}-labels-idx1-ubyte (raw or .gz); "
            f"add them or choose the other split",
        )
    x = _read_idx(images, 3)[:, None]  # (N, H, W) -> (N, 1, H, W)
    y = _read_idx(labels, 1)
    if len(x) != len(y):
        raise _error(folder, f"{images.name} has {len(x)} images but {labels.name} has {len(y)} labels; download them again")
    return x, y, None, f"idx folder {folder} ({split} split)"


# ---------------------------------------------------------------------------------------------
# 2. CIFAR-10 binary version


def _cifar_folder(path: Path) -> Path | None:
    if (path / CIFAR_DIR).is_dir():
        return path / CIFAR_DIR
    known = ["batches.meta.txt", *CIFAR_FILES["test"], *CIFAR_FILES["train"]]
    return path if any((path / name).is_file() for name in known) else None


def _load_cifar(folder: Path, split: str):
    files = [folder / name for name in CIFAR_FILES[split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise _error(folder, f"the CIFAR-10 {split} split is missing ({', '.join(missing)} not found); add it or use the other split")
    records = []
    for f in files:
        data = np.fromfile(f, dtype=np.uint8)
        if len(data) == 0 or len(data) % CIFAR_RECORD:
            raise _error(f, f"size {len(data)} bytes is not a multiple of the {CIFAR_RECORD}-byte CIFAR-10 record; download it again")
        records.append(data.reshape(-1, CIFAR_RECORD))
    rec = np.concatenate(records) if len(records) > 1 else records[0]
    meta = folder / "batches.meta.txt"
    names = [line.strip() for line in meta.read_text().splitlines() if line.strip()] if meta.is_file() else None
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0], names, f"CIFAR-10 binary folder {folder} ({split} split)"


# ---------------------------------------------------------------------------------------------
# 3. ImageFolder


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_dirs(root: Path) -> list[Path]:
    # Every non-hidden subfolder is a class, sorted by name as torchvision's ImageFolder does, so
    # label indices agree with models trained on it (even when a class has no images here).
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _imagefolder_root(path: Path, split: str) -> Path | None:
    if (path / "train").is_dir() and (path / "test").is_dir():
        return path / split
    return path if any(_images_in(d) for d in _class_dirs(path)) else None


def _load_image(f: Path) -> np.ndarray:
    from PIL import Image  # imported here: only ImageFolder needs Pillow

    try:
        with Image.open(f) as img:
            # Grayscale stays one channel; everything else (palette, RGBA, CMYK...) becomes RGB.
            return np.asarray(img.convert("L" if img.mode in ("1", "L", "LA") else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise _error(f, f"not a readable image ({e}); fix or remove it") from None


def _load_imagefolder(root: Path, limit: int | None):
    classes = _class_dirs(root)
    files = [(f, label) for label, d in enumerate(classes) for f in _images_in(d)]
    if not files:
        raise _error(root, f"no .png/.jpg/.jpeg/.bmp images in class folders; {FORMATS_HINT}")
    files = files[:limit]  # decode only what will be used
    arrays = [_load_image(f) for f, _ in files]
    h, w = arrays[0].shape[:2]
    for (f, _), a in zip(files, arrays):
        if a.shape[:2] != (h, w):
            raise _error(root, f"images differ in size ({files[0][0].name} is {w}x{h}, {f.name} is {a.shape[1]}x{a.shape[0]}); resize them all to one size")
    if any(a.ndim == 3 for a in arrays):  # mixed gray and colour: give the gray ones three channels
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        x = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        x = np.stack(arrays)[:, None]
    y = np.array([label for _, label in files], dtype=np.int64)
    return x, y, [d.name for d in classes], f"ImageFolder {root}"


# ---------------------------------------------------------------------------------------------
# 4. .npz


def _load_npz(path: Path):
    try:
        z = np.load(path, allow_pickle=False)  # never unpickle: a data file must not run code
        if not hasattr(z, "files"):
            raise _error(path, "holds a single array, not an .npz archive with x and y; save with np.savez(path, x=..., y=...)")
        with z:
            if "x" not in z.files or "y" not in z.files:
                raise _error(path, f"needs arrays named x and y but has {sorted(z.files)}; save with np.savez(path, x=..., y=...)")
            x, y = z["x"], z["y"]
            names = [str(n) for n in z["class_names"].reshape(-1)] if "class_names" in z.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise _error(path, f"not a readable .npz file ({e}); save one with np.savez(path, x=..., y=...)") from None
    if x.ndim == 3:  # NHW grayscale
        x = x[:, None]
    elif x.ndim == 4:
        # The channel axis is the one holding 1 or 3; if both or neither do, guessing would be wrong.
        first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if last and not first:
            x = x.transpose(0, 3, 1, 2)
        elif not (first and not last):
            raise _error(path, f"cannot tell NCHW from NHWC for x of shape {x.shape} (need 1 or 3 channels on exactly one of axes 1 and 3)")
    else:
        raise _error(path, f"x has shape {x.shape}; expected NHWC, NCHW or NHW images")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise _error(path, f"y must be a 1-D array of integer labels, got {y.dtype} of shape {y.shape}")
    return x, y, names, f"npz file {path}"


# ---------------------------------------------------------------------------------------------
# dispatch


def _finish(path, x: np.ndarray, y: np.ndarray, names, source: str, limit: int | None) -> Dataset:
    """Shared validation and conversion: after `limit`, so a quick run touches only what it uses."""
    if len(x) != len(y):
        raise _error(path, f"{len(x)} images but {len(y)} labels; x and y must have the same length")
    if len(x) == 0:
        raise _error(path, "contains no samples")
    if limit is not None and limit < len(x):
        x, y, source = x[:limit], y[:limit], f"{source}, first {limit}"
    if y.min() < 0 or (names is not None and y.max() >= len(names)):
        raise _error(path, f"labels run from {y.min()} to {y.max()} but there are {len(names) if names else 'no'} class names; fix the labels")
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = float(x.min()), float(x.max())
        if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
            raise _error(path, f"float pixel values run from {lo} to {hi}; scale them to [0, 1] (or store uint8 0..255)")
        x = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        if x.min() < 0 or x.max() > 255:
            raise _error(path, f"integer pixel values run from {x.min()} to {x.max()}; expected 0..255")
        x = x.astype(np.float32) / np.float32(255)
    else:
        raise _error(path, f"pixel type {x.dtype} is not supported; use uint8 0..255 or float in [0, 1]")
    # astype copies, so the tensors own writable, contiguous memory (np.frombuffer data is read-only).
    return Dataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)), names, source)


def load_dataset(path, split: str = "test", limit: int | None = None) -> Dataset:
    """Load labelled images from `path`, detecting the format (see the module docstring)."""
    path = Path(path).expanduser()
    if split not in SPLITS:
        raise EdgekdError(f"unknown split {split!r}; use 'test' or 'train'")
    if limit is not None and limit < 1:
        raise EdgekdError(f"limit must be a positive number of samples, got {limit}")
    if not path.exists():
        raise _error(path, f"no such file or folder; {FORMATS_HINT}")
    try:
        if path.is_file():
            if path.suffix.lower() != ".npz":
                raise _error(path, f"a file that is not .npz; {FORMATS_HINT}")
            return _finish(path, *_load_npz(path), limit)
        if (cifar := _cifar_folder(path)) is not None:
            return _finish(path, *_load_cifar(cifar, split), limit)
        if _is_idx_folder(path):
            return _finish(path, *_load_idx(path, split), limit)
        if (root := _imagefolder_root(path, split)) is not None:
            return _finish(path, *_load_imagefolder(root, limit), limit)
    except OSError as e:  # permissions, unreadable disks: still a one-line message
        raise _error(path, f"{e.strerror or e} ({e.filename or path})") from None
    raise _error(path, f"no idx, CIFAR-10 binary, ImageFolder or .npz data found; {FORMATS_HINT}")


def iterate_batches(ds: Dataset, batch_size: int):
    """Yield (x, y) views of consecutive batches; the last one may be smaller."""
    if batch_size < 1:
        raise EdgekdError(f"batch size must be at least 1, got {batch_size}")
    for i in range(0, len(ds.y), batch_size):
        yield ds.x[i : i + batch_size], ds.y[i : i + batch_size]


def check_matches(ds: Dataset, input_shape: tuple[int, int, int]) -> None:
    """Fail early, with both shapes, when the data cannot be fed to the model as is."""
    data_shape = tuple(ds.x.shape[1:])
    if data_shape != tuple(input_shape):
        raise EdgekdError(
            f"eval data {ds.source} has images of shape (C, H, W) {data_shape} but the model expects "
            f"{tuple(input_shape)}; pass data that matches the model"
        )
