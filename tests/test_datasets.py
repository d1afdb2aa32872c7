"""EMNIST / Fashion-MNIST conversion on tiny files in the exact on-disk format torchvision reads: orientation,
the HDF5 layout, checksums of hand-placed archives, and failing fast (with the fix) when offline. No network."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import struct
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torchvision.datasets import EMNIST, FashionMNIST

from manifold_robustness import datasets
from manifold_robustness.data import read_split

N_TRAIN, N_TEST = 20, 10
REAL_REACHABLE = datasets.reachable  # the autouse fixture replaces it so that no test reaches the network


@pytest.fixture(autouse=True)
def _tiny_sizes(monkeypatch):
    """The tiny files hold N_TRAIN/N_TEST images, not the paper's numbers; never touch the network."""
    monkeypatch.setattr(datasets, "EXPECTED_SIZES", {n: (N_TRAIN, N_TEST) for n in datasets.DATASETS})
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: False)


def idx_images(images: np.ndarray) -> bytes:
    """uint8 images (n,h,w) as an idx3-ubyte file (magic 0x00000803, big-endian dims)."""
    return struct.pack(">IIII", 0x0803, *images.shape) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """uint8 labels (n,) as an idx1-ubyte file (magic 0x00000801)."""
    return struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes()


def upright_images(n: int, offset: int) -> np.ndarray:
    """Upright images with a bar along the left part of the top row, plus a per-image marker pixel value."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, :14] = 255
    images[:, 20, 20] = np.arange(offset, offset + n)
    return images


def raw_contents(name: str) -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The raw files (name -> bytes) torchvision reads for `name`, and the upright data they encode per split."""
    files, truth = {}, {}
    for split, n, offset in (("train", N_TRAIN, 1), ("test", N_TEST, 100)):
        images, labels = upright_images(n, offset), np.arange(n) % 10
        stored = images.transpose(0, 2, 1) if name == "emnist" else images  # EMNIST's files hold transposed images
        image_file, label_file = datasets.raw_files(name)[split]
        files[image_file], files[label_file] = idx_images(stored), idx_labels(labels)
        truth[split] = images, labels
    return files, truth


def write_raw(name: str, root: Path, compress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Put the tiny raw files in the folder torchvision reads (as .gz if `compress`); return the upright data."""
    files, truth = raw_contents(name)
    raw = datasets.raw_folder(name, root)
    raw.mkdir(parents=True)
    for filename, content in files.items():
        if compress:
            (raw / f"{filename}.gz").write_bytes(gzip.compress(content))
        else:
            (raw / filename).write_bytes(content)
    return truth


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust_fashion_gz(monkeypatch, raw: Path) -> None:
    """Make torchvision's Fashion-MNIST md5 table match the tiny .gz files in `raw`."""
    table = [(f, md5(raw / f)) for f, _ in FashionMNIST.resources]
    monkeypatch.setattr(FashionMNIST, "resources", table)


def emnist_zip(root: Path) -> Path:
    """A tiny EMNIST `gzip.zip` laid out like the real one (members gzip/<file>.gz), in the raw folder."""
    files, _ = raw_contents("emnist")
    raw = datasets.raw_folder("emnist", root)
    raw.mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for filename, content in files.items():
            zf.writestr(f"gzip/{filename}.gz", gzip.compress(content))
        zf.writestr("gzip/emnist-letters-train-images-idx3-ubyte.gz", gzip.compress(b"not needed"))
    path = raw / "gzip.zip"
    path.write_bytes(buf.getvalue())
    return path


def test_raw_folder_and_files_are_the_ones_torchvision_reads(tmp_path):
    write_raw("emnist", tmp_path)
    write_raw("fashion", tmp_path)
    assert datasets.raw_folder("emnist", tmp_path) == tmp_path / "EMNIST" / "raw"
    assert datasets.raw_folder("fashion", tmp_path) == tmp_path / "FashionMNIST" / "raw"
    for train in (True, False):
        assert len(EMNIST(str(tmp_path), split="digits", train=train)) == (N_TRAIN if train else N_TEST)
        assert len(FashionMNIST(str(tmp_path), train=train)) == (N_TRAIN if train else N_TEST)


def test_upright_emnist_transposes():
    images = torch.from_numpy(upright_images(2, 1).transpose(0, 2, 1).copy())
    assert np.array_equal(datasets.upright_emnist(images).numpy(), upright_images(2, 1))


@pytest.mark.parametrize("name", datasets.DATASETS)
def test_convert_layout_and_orientation(tmp_path, name):
    truth = write_raw(name, tmp_path / "res")
    out = tmp_path / "data" / f"{name}.h5"
    datasets.convert(name, tmp_path / "res", out, download=False)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        d = read_split(out, split)
        images, labels = d["images"], d["labels"]
        assert images.dtype == np.float32 and images.shape == (n, 1, 28, 28)
        assert labels.dtype == np.int64 and labels.shape == (n,)
        assert 0.0 <= images.min() and images.max() <= 1.0
        # upright: the bar is in the top row, not in the left column (what an untransposed EMNIST would show)
        assert (images[:, 0, 0, :14] == 1.0).all()
        assert (images[:, 0, 1:14, 0] == 0.0).all()
        np.testing.assert_allclose(images[:, 0], truth[split][0] / 255.0, atol=1e-7)
        np.testing.assert_array_equal(labels, truth[split][1])
    with h5py.File(out, "r") as h5:
        assert h5.attrs["dataset"] == name
        assert h5.attrs["source_split"] == ("digits" if name == "emnist" else "all")
        assert (h5.attrs["n_train"], h5.attrs["n_test"], h5.attrs["n_classes"]) == (N_TRAIN, N_TEST, 10)
        assert h5.attrs["torchvision_version"]


def test_emnist_conversion_fails_without_upright(tmp_path, monkeypatch):
    """The orientation check above would catch a conversion that skipped `upright_emnist`."""
    write_raw("emnist", tmp_path)
    monkeypatch.setattr(datasets, "upright_emnist", lambda images: images)
    images = datasets.load_torchvision("emnist", tmp_path, download=False)["train"][0].numpy()
    assert not (images[:, 0, :14] == 255).all()


def test_wrong_sizes_are_refused(tmp_path, monkeypatch):
    write_raw("fashion", tmp_path)
    monkeypatch.setattr(datasets, "EXPECTED_SIZES", {"fashion": (60_000, 10_000)})
    with pytest.raises(RuntimeError, match="hold 20 images, the paper's dataset has 60000"):
        datasets.load_torchvision("fashion", tmp_path, download=False)


def test_truncated_file_is_named(tmp_path):
    write_raw("fashion", tmp_path)
    path = datasets.raw_folder("fashion", tmp_path) / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(RuntimeError, match="train-images-idx3-ubyte.*not valid idx files"):
        datasets.load_torchvision("fashion", tmp_path, download=False)


@pytest.mark.parametrize("name", datasets.DATASETS)
@pytest.mark.parametrize("download", [False, True])
def test_offline_error_is_fast_and_says_what_to_do(tmp_path, name, download):
    start = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        datasets.convert(name, tmp_path / "res", tmp_path / "out.h5", download=download)
    assert time.monotonic() - start < 5
    message = str(err.value)
    for filename in datasets.needed_files(name):
        assert filename in message
    for url in datasets._urls(name):
        assert url.removesuffix(url.rsplit("/", 1)[1]) in message
    assert f"{tmp_path / 'res' / datasets.dataset_class(name).__name__ / 'raw'}/" in message
    assert "by hand" in message
    assert not (tmp_path / "out.h5").exists()


def test_reachable_is_bounded_and_local():
    """The probe answers quickly for a closed port and says yes for a listening one (no network used)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        closed_port = server.getsockname()[1]  # closed once the block ends
    start = time.monotonic()
    assert not REAL_REACHABLE(("127.0.0.1", closed_port), timeout=1.0)
    assert time.monotonic() - start < 2
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert REAL_REACHABLE(server.getsockname(), timeout=1.0)


def test_probe_uses_proxy(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert datasets.probe_address("https://biometrics.nist.gov/x.zip") == ("proxy.example", 3128)


def test_fashion_gz_by_hand_is_verified_and_used(tmp_path, monkeypatch):
    truth = write_raw("fashion", tmp_path, compress=True)
    trust_fashion_gz(monkeypatch, datasets.raw_folder("fashion", tmp_path))
    loaded = datasets.load_torchvision("fashion", tmp_path, download=False)
    np.testing.assert_array_equal(loaded["test"][0].numpy(), truth["test"][0])


def test_fashion_gz_with_bad_md5_is_named_moved_aside_and_not_used(tmp_path, monkeypatch):
    write_raw("fashion", tmp_path, compress=True)
    raw = datasets.raw_folder("fashion", tmp_path)
    trust_fashion_gz(monkeypatch, raw)
    bad = raw / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_labels(np.full(N_TEST, 3))))  # not the file the table's md5 is for
    with pytest.raises(RuntimeError, match="t10k-labels-idx1-ubyte.gz has md5 .* expected") as err:
        datasets.convert("fashion", tmp_path, tmp_path / "out.h5", download=False)
    assert "moved aside" in str(err.value)
    assert not bad.exists() and (raw / "t10k-labels-idx1-ubyte.gz.bad").exists()
    assert not (raw / "t10k-labels-idx1-ubyte").exists()  # never decompressed
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(RuntimeError, match="missing .*t10k-labels-idx1-ubyte"):  # and not used on a rerun
        datasets.convert("fashion", tmp_path, tmp_path / "out.h5", download=False)


def test_bad_archive_also_discards_files_made_from_it(tmp_path, monkeypatch):
    write_raw("fashion", tmp_path, compress=True)
    raw = datasets.raw_folder("fashion", tmp_path)
    trust_fashion_gz(monkeypatch, raw)
    datasets.prepare_raw("fashion", tmp_path, download=False)
    assert (raw / "train-images-idx3-ubyte").exists()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    with pytest.raises(RuntimeError, match="train-images-idx3-ubyte.gz has md5"):
        datasets.prepare_raw("fashion", tmp_path, download=False)
    assert (raw / "train-images-idx3-ubyte.bad").exists() and not (raw / "train-images-idx3-ubyte").exists()


def test_emnist_zip_by_hand_is_verified_and_only_digits_extracted(tmp_path, monkeypatch):
    path = emnist_zip(tmp_path)
    monkeypatch.setattr(EMNIST, "md5", md5(path))
    loaded = datasets.load_torchvision("emnist", tmp_path, download=False)
    assert (loaded["train"][0][:, 0, :14] == 255).all()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(["gzip.zip", *datasets.needed_files("emnist")])


def test_emnist_zip_with_bad_md5_is_named_moved_aside_and_not_used(tmp_path):
    path = emnist_zip(tmp_path)  # the real md5 in torchvision's EMNIST.md5 does not match the tiny zip
    with pytest.raises(RuntimeError, match=r"gzip.zip has md5 .* expected 58c8d27c"):
        datasets.convert("emnist", tmp_path, tmp_path / "out.h5", download=False)
    assert not path.exists() and path.with_name("gzip.zip.bad").exists()
    assert not any((path.parent / f).exists() for f in datasets.needed_files("emnist"))


def test_download_uses_torchvision_download_and_moves_corrupt_download_aside(tmp_path, monkeypatch):
    """With the network reachable, a download that torchvision finds corrupt is named, moved aside, not used."""
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: True)

    def corrupt_download(url, root, filename, md5):
        (Path(root) / filename).write_bytes(b"truncated")
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(datasets, "download_url", corrupt_download)
    with pytest.raises(RuntimeError, match="gzip.zip has md5"):
        datasets.convert("emnist", tmp_path, tmp_path / "out.h5", download=True)
    assert (datasets.raw_folder("emnist", tmp_path) / "gzip.zip.bad").exists()


def test_download_then_convert(tmp_path, monkeypatch):
    """The download path: torchvision's download_url (faked here) fills the raw folder, then conversion runs."""
    source = tmp_path / "mirror"
    write_raw("fashion", source, compress=True)
    trust_fashion_gz(monkeypatch, datasets.raw_folder("fashion", source))
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: True)
    calls = []

    def fake_download(url, root, filename, md5):
        calls.append(url)
        data = (datasets.raw_folder("fashion", source) / filename).read_bytes()
        assert hashlib.md5(data).hexdigest() == md5
        (Path(root) / filename).write_bytes(data)

    monkeypatch.setattr(datasets, "download_url", fake_download)
    datasets.convert("fashion", tmp_path / "res", tmp_path / "out.h5", download=True)
    assert calls == [FashionMNIST.mirrors[0] + f for f, _ in FashionMNIST.resources]
    assert read_split(tmp_path / "out.h5", "train")["images"].shape == (N_TRAIN, 1, 28, 28)
