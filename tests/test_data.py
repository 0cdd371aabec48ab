"""edgekd.data on the real datasets in shared/ and on small files written here; no mocks."""
import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import Dataset, check_matches, iterate_batches, load_dataset
from edgekd.errors import EdgekdError

# ----------------------------------------------------------------------------- real data


def test_mnist_test_split(shared):
    ds = load_dataset(shared / "datasets/mnist")
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.shape == (10000,) and ds.y.dtype == torch.int64
    assert 0.0 <= ds.x.min() and ds.x.max() == 1.0
    assert sorted(ds.y.unique().tolist()) == list(range(10))
    assert ds.y[0] == 7
    assert ds.y.bincount()[1] == 1135  # published class count of digit 1 in the MNIST test set
    assert ds.class_names is None and "test split" in ds.source


def test_mnist_train_split_with_limit(shared):
    ds = load_dataset(shared / "datasets/mnist", split="train", limit=50)
    assert ds.x.shape == (50, 1, 28, 28)
    assert ds.y[0] == 5


def test_fashion_mnist(shared):
    ds = load_dataset(shared / "datasets/fashion-mnist", limit=100)
    assert ds.x.shape == (100, 1, 28, 28)
    assert 0 <= ds.y.min() and ds.y.max() <= 9


@pytest.mark.parametrize("sub", ["datasets/cifar10", "datasets/cifar10/cifar-10-batches-bin"])
def test_cifar10_test_split(shared, sub):
    ds = load_dataset(shared / sub)
    assert ds.x.shape == (10000, 3, 32, 32)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert len(ds.class_names) == 10 and ds.class_names[0] == "airplane"
    assert ds.y.bincount().tolist() == [1000] * 10


def test_cifar10_train_split_missing(shared):
    with pytest.raises(EdgekdError, match="train split is missing"):
        load_dataset(shared / "datasets/cifar10", split="train")


def test_truncated_gz_idx(shared, tmp_path):
    src = shared / "datasets/mnist"
    data = (src / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes((src / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(EdgekdError, match="t10k-images-idx3-ubyte.gz: corrupt or truncated"):
        load_dataset(tmp_path)


def test_truncated_raw_idx(shared, tmp_path):
    src = shared / "datasets/mnist"
    labels = gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels[:-10])
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes((src / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(EdgekdError, match="header says 10000 data bytes"):
        load_dataset(tmp_path)


def test_check_matches_and_batches(shared):
    ds = load_dataset(shared / "datasets/mnist", limit=100)
    check_matches(ds, (1, 28, 28))
    with pytest.raises(EdgekdError, match=r"\(1, 28, 28\).*\(3, 32, 32\)"):
        check_matches(ds, (3, 32, 32))
    batches = list(iterate_batches(ds, 32))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([x for x, _ in batches]), ds.x)
    assert batches[0][0].data_ptr() == ds.x.data_ptr()  # views, not copies


# ----------------------------------------------------------------------------- npz


def test_npz_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    y = np.arange(6) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.x.shape == (6, 3, 8, 8) and ds.x.dtype == torch.float32
    assert torch.allclose(ds.x * 255, torch.from_numpy(x.transpose(0, 3, 1, 2)).float())
    assert ds.y.tolist() == y.tolist() and ds.class_names == ["a", "b", "c"]


def test_npz_nchw_float_and_nhw(tmp_path):
    x = np.random.default_rng(1).random((5, 1, 10, 12), dtype=np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=np.zeros(5, dtype=np.int64))
    ds = load_dataset(tmp_path / "f.npz", limit=3)
    assert ds.x.shape == (3, 1, 10, 12) and torch.equal(ds.x, torch.from_numpy(x[:3]))
    np.savez(tmp_path / "g.npz", x=(x[:, 0] * 255).astype(np.uint8), y=np.zeros(5, dtype=np.int64))
    assert load_dataset(tmp_path / "g.npz").x.shape == (5, 1, 10, 12)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((4, 1, 8, 8), np.uint8), np.zeros(3, np.int64), "4 images but 3 labels"),
        (np.full((2, 1, 8, 8), 2.0, np.float32), np.zeros(2, np.int64), r"scale them to \[0, 1\]"),
        (np.zeros((2, 3, 8, 3), np.uint8), np.zeros(2, np.int64), "cannot tell NCHW from NHWC"),
        (np.zeros((2, 8), np.uint8), np.zeros(2, np.int64), "expected NHWC, NCHW or NHW"),
        (np.zeros((2, 1, 8, 8), np.uint8), np.zeros(2, np.float32), "integer labels"),
    ],
)
def test_npz_bad_content(tmp_path, x, y, match):
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    with pytest.raises(EdgekdError, match=match):
        load_dataset(tmp_path / "bad.npz")


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 1, 4, 4)))
    with pytest.raises(EdgekdError, match="needs arrays named x and y"):
        load_dataset(tmp_path / "d.npz")


# ----------------------------------------------------------------------------- ImageFolder


def _write_images(root, classes, size=(9, 7), mode="RGB", n=2):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new(mode, size, color=i * 40).save(root / c / f"{i}.png")


def test_imagefolder_rgb(tmp_path):
    _write_images(tmp_path, ["dog", "cat"])
    Image.new("RGBA", (9, 7)).save(tmp_path / "cat" / "extra.png")  # RGBA becomes RGB
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path)
    assert ds.class_names == ["cat", "dog"]  # sorted, as torchvision does
    assert ds.x.shape == (5, 3, 7, 9)
    assert ds.y.tolist() == [0, 0, 0, 1, 1]


def test_imagefolder_gray_and_splits(tmp_path):
    _write_images(tmp_path / "train", ["a", "b"], mode="L", n=3)
    _write_images(tmp_path / "test", ["a", "b"], mode="L", n=1)
    ds = load_dataset(tmp_path)
    assert ds.x.shape == (2, 1, 7, 9) and ds.class_names == ["a", "b"]
    assert len(load_dataset(tmp_path, split="train")) == 6


def test_imagefolder_mixed_sizes(tmp_path):
    _write_images(tmp_path, ["a"])
    Image.new("RGB", (5, 5)).save(tmp_path / "a" / "small.png")
    with pytest.raises(EdgekdError, match="images differ in size"):
        load_dataset(tmp_path)


def test_imagefolder_corrupt_image(tmp_path):
    _write_images(tmp_path, ["a"])
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(EdgekdError, match="broken.jpg: not a readable image"):
        load_dataset(tmp_path)


# ----------------------------------------------------------------------------- bad input


def test_garbage_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(EdgekdError, match="not a readable .npz file"):
        load_dataset(tmp_path / "junk.npz")
    (tmp_path / "junk.bin").write_bytes(b"garbage")
    with pytest.raises(EdgekdError, match="not .npz"):
        load_dataset(tmp_path / "junk.bin")
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "t10k-images-idx3-ubyte").write_bytes(b"garbage" * 100)
    (idx / "t10k-labels-idx1-ubyte").write_bytes(b"garbage" * 100)
    with pytest.raises(EdgekdError, match="bad magic number"):
        load_dataset(idx)
    with pytest.raises(EdgekdError, match="no train split"):
        load_dataset(idx, split="train")


def test_cifar_bad_size(tmp_path):
    (tmp_path / "test_batch.bin").write_bytes(bytes(3073 * 2 + 5))
    with pytest.raises(EdgekdError, match="not a multiple of the 3073-byte"):
        load_dataset(tmp_path)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(EdgekdError, match="no idx, CIFAR-10 binary, ImageFolder or .npz data found"):
        load_dataset(tmp_path)
    with pytest.raises(EdgekdError, match="no such file or folder"):
        load_dataset(tmp_path / "absent")


def test_bad_arguments(tmp_path):
    with pytest.raises(EdgekdError, match="unknown split"):
        load_dataset(tmp_path, split="val")
    with pytest.raises(EdgekdError, match="limit must be a positive"):
        load_dataset(tmp_path, limit=0)
    ds = Dataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), None, "x")
    with pytest.raises(EdgekdError, match="batch size"):
        next(iterate_batches(ds, 0))
