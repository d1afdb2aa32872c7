"""EMNIST / Fashion-MNIST conversion on tiny files in the exact on-disk format torchvision reads: orientation,
the HDF5 layout, checksums of hand-placed archives, Fashion-MNIST's content digests (recompressed archives
accepted, changed bytes refused), the system folder of Debian's dataset-fashion-mnist, and failing fast (with the
fix) when offline. No network."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
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
# The autouse fixture replaces these: no test reaches the network, the machine's system folders or the real digests.
REAL_REACHABLE = datasets.reachable
REAL_CONTENT_SHA256 = datasets.CONTENT_SHA256
REAL_SYSTEM_FOLDERS = datasets.FASHION_SYSTEM_FOLDERS
DEBIAN_GZ = [datasets.DEBIAN_FASHION_FOLDER / f"{f}.gz" for f in datasets.needed_files("fashion")]


@pytest.fixture(autouse=True)
def _tiny_sizes(monkeypatch, tmp_path):
    """The tiny files hold N_TRAIN/N_TEST images, not the paper's numbers, and are the genuine content here; never
    touch the network; the only system folder is `<tmp_path>/system` (absent unless a test makes it)."""
    monkeypatch.setattr(datasets, "EXPECTED_SIZES", {n: (N_TRAIN, N_TEST) for n in datasets.DATASETS})
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: False)
    monkeypatch.setattr(datasets, "CONTENT_SHA256", {"fashion": {f: sha256(content)
                                                                 for f, content in raw_contents("fashion")[0].items()}})
    monkeypatch.setattr(datasets, "FASHION_SYSTEM_FOLDERS", (tmp_path / "system",))


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


def raw_contents(name: str, shift: int = 0) -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The raw files (name -> bytes) torchvision reads for `name`, and the upright data they encode per split
    (`shift` changes the marker pixels, for a second, different copy)."""
    files, truth = {}, {}
    for split, n, offset in (("train", N_TRAIN, 1 + shift), ("test", N_TEST, 100 + shift)):
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_system(files: dict[str, bytes]) -> Path:
    """The tiny files as .gz in the (patched) system folder, compressed differently from any archive in a test."""
    folder = datasets.FASHION_SYSTEM_FOLDERS[0]
    folder.mkdir(parents=True)
    for filename, content in files.items():
        (folder / f"{filename}.gz").write_bytes(gzip.compress(content, compresslevel=6, mtime=0))
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file of `folder`: size, mtime, mode and md5, to show the folder was left as it was."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode, md5(p)) for p in folder.iterdir()}


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == datasets.__name__]


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


@pytest.mark.parametrize("name", datasets.DATASETS)
def test_load_split_turns_emnist_upright_and_leaves_fashion_as_stored(tmp_path, name):
    """Against what torchvision reads from the files: EMNIST's images come back transposed (upright), Fashion-MNIST's
    unchanged; the tiny images are not symmetric, so a transposition that is skipped or misplaced shows."""
    truth = write_raw(name, tmp_path)
    for split, train in (("train", True), ("test", False)):
        kwargs = {"split": "digits"} if name == "emnist" else {}
        stored = datasets.dataset_class(name)(str(tmp_path), train=train, **kwargs).data.numpy()
        images, labels = datasets.load_split(name, tmp_path, split)
        assert images.dtype == torch.uint8 and tuple(images.shape) == stored.shape
        np.testing.assert_array_equal(images.numpy(), truth[split][0])
        np.testing.assert_array_equal(labels.numpy(), truth[split][1])
        if name == "emnist":
            assert not np.array_equal(stored, truth[split][0])  # the files hold the transposed images
            np.testing.assert_array_equal(images.numpy(), stored.transpose(0, 2, 1))
        else:
            np.testing.assert_array_equal(images.numpy(), stored)


@pytest.mark.parametrize("name", datasets.DATASETS)
@pytest.mark.parametrize("bad_label", [10, 255])
def test_labels_outside_0_to_9_are_refused(tmp_path, monkeypatch, name, bad_label):
    """The structure check on the label range, all that files without a pinned content digest (EMNIST's) get;
    Fashion-MNIST's digests are switched off so that this check, not the content check, must refuse the file."""
    monkeypatch.setattr(datasets, "CONTENT_SHA256", {})
    write_raw(name, tmp_path)
    filename = datasets.raw_files(name)["test"][1]
    labels = np.arange(N_TEST) % 10
    labels[3] = bad_label
    (datasets.raw_folder(name, tmp_path) / filename).write_bytes(idx_labels(labels))
    with pytest.raises(RuntimeError, match=rf"{name}:test: labels in .*{filename}.* range over 0\.\.{bad_label}, "
                                           r"not 0\.\.9"):
        datasets.convert(name, tmp_path, tmp_path / "out.h5", download=False)
    assert not (tmp_path / "out.h5").exists()


def test_wrong_sizes_are_refused(tmp_path, monkeypatch):
    write_raw("fashion", tmp_path)
    monkeypatch.setattr(datasets, "EXPECTED_SIZES", {"fashion": (60_000, 10_000)})
    with pytest.raises(RuntimeError, match="hold 20 images, the paper's dataset has 60000"):
        datasets.load_torchvision("fashion", tmp_path, download=False)


@pytest.mark.parametrize("name", datasets.DATASETS)
def test_truncated_file_is_named(tmp_path, monkeypatch, name):
    """The structure check, all that files without a pinned content digest (EMNIST's) get."""
    monkeypatch.setattr(datasets, "CONTENT_SHA256", {})
    write_raw(name, tmp_path)
    filename = datasets.raw_files(name)["train"][0]
    path = datasets.raw_folder(name, tmp_path) / filename
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(RuntimeError, match=f"{filename}.*not valid idx files"):
        datasets.load_torchvision(name, tmp_path, download=False)


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
    made = raw / "train-images-idx3-ubyte"
    assert made.exists()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    made.write_bytes(made.read_bytes()[:-1] + b"\x01")  # as if decompressed from the bad archive
    with pytest.raises(RuntimeError, match="train-images-idx3-ubyte.gz has md5"):
        datasets.prepare_raw("fashion", tmp_path, download=False)
    assert (raw / "train-images-idx3-ubyte.bad").exists() and not made.exists()


def test_bad_archive_keeps_a_genuine_file_made_from_it(tmp_path, monkeypatch):
    """By content, a Fashion-MNIST file beside a bad archive is known genuine: only the archive goes."""
    write_raw("fashion", tmp_path, compress=True)
    raw = datasets.raw_folder("fashion", tmp_path)
    trust_fashion_gz(monkeypatch, raw)
    datasets.prepare_raw("fashion", tmp_path, download=False)
    genuine = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    with pytest.raises(RuntimeError, match="train-images-idx3-ubyte.gz has md5 .*kept, content verified: "
                                           "train-images-idx3-ubyte"):
        datasets.prepare_raw("fashion", tmp_path, download=False)
    assert (raw / "train-images-idx3-ubyte.gz.bad").exists() and not (raw / "train-images-idx3-ubyte.bad").exists()
    assert (raw / "train-images-idx3-ubyte").read_bytes() == genuine
    datasets.prepare_raw("fashion", tmp_path, download=False)  # the rerun uses it


def test_bad_emnist_zip_discards_files_made_from_it(tmp_path, monkeypatch):
    """EMNIST's files have no pinned content: those beside a bad zip are distrusted with it."""
    path = emnist_zip(tmp_path)
    monkeypatch.setattr(EMNIST, "md5", md5(path))
    datasets.prepare_raw("emnist", tmp_path, download=False)
    monkeypatch.setattr(EMNIST, "md5", "0" * 32)
    with pytest.raises(RuntimeError, match="gzip.zip has md5"):
        datasets.prepare_raw("emnist", tmp_path, download=False)
    assert all((path.parent / f"{f}.bad").exists() and not (path.parent / f).exists()
               for f in datasets.needed_files("emnist"))


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


def test_pinned_content_digests_cover_fashion_and_debian_folder_is_the_default():
    assert sorted(REAL_CONTENT_SHA256["fashion"]) == sorted(datasets.needed_files("fashion"))
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in REAL_CONTENT_SHA256["fashion"].values())
    assert "emnist" not in REAL_CONTENT_SHA256
    assert REAL_SYSTEM_FOLDERS == (Path("/usr/share/datasets/fashion-mnist"),)


def test_recompressed_fashion_gz_is_accepted_by_content_and_logged(tmp_path, monkeypatch, caplog):
    files, truth = raw_contents("fashion")
    write_raw("fashion", tmp_path, compress=True)
    raw = datasets.raw_folder("fashion", tmp_path)
    trust_fashion_gz(monkeypatch, raw)  # the .gz written first stand for the canonical archives
    table = dict(FashionMNIST.resources)
    for filename, content in files.items():  # same content, other gzip bytes (level, header mtime)
        (raw / f"{filename}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
        assert md5(raw / f"{filename}.gz") != table[f"{filename}.gz"]
    caplog.set_level(logging.INFO, logger=datasets.__name__)
    datasets.convert("fashion", tmp_path, tmp_path / "out.h5", download=False)
    verified = [m for m in messages(caplog) if "recompressed archive, content verified" in m]
    assert len(verified) == 4 and all(any(f"{f}.gz" in m for m in verified) for f in files)
    assert sorted(p.name for p in raw.iterdir()) == sorted([*files, *(f"{f}.gz" for f in files)])  # no .bad
    for split in ("train", "test"):
        d = read_split(tmp_path / "out.h5", split)
        np.testing.assert_array_equal(d["images"][:, 0], truth[split][0] / np.float32(255.0))
        np.testing.assert_array_equal(d["labels"], truth[split][1])


def test_changed_byte_in_uncompressed_file_is_named_moved_aside_and_not_converted(tmp_path):
    write_raw("fashion", tmp_path)
    raw = datasets.raw_folder("fashion", tmp_path)
    path = raw / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[16 + 5 * 28 * 28 + 300] ^= 0x01  # one pixel of image 5
    path.write_bytes(bytes(data))
    assert len(FashionMNIST(str(tmp_path), train=True)) == N_TRAIN  # still valid idx: only the content tells
    others = {f: (raw / f).read_bytes() for f in datasets.needed_files("fashion") if f != path.name}
    with pytest.raises(RuntimeError, match="content mismatch") as err:
        datasets.convert("fashion", tmp_path, tmp_path / "out.h5", download=False)
    message = str(err.value)
    expected = datasets.CONTENT_SHA256["fashion"][path.name]
    assert f"{path} has sha256 {sha256(bytes(data))}, expected {expected}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "delete the *.bad files" in message
    assert not path.exists() and (raw / "train-images-idx3-ubyte.bad").read_bytes() == bytes(data)
    assert {f: (raw / f).read_bytes() for f in others} == others  # the genuine files stay
    assert not (tmp_path / "out.h5").exists()


def test_changed_file_beside_genuine_gz_keeps_the_gz_and_a_rerun_uses_it(tmp_path, monkeypatch):
    truth = write_raw("fashion", tmp_path, compress=True)
    raw = datasets.raw_folder("fashion", tmp_path)
    trust_fashion_gz(monkeypatch, raw)
    datasets.prepare_raw("fashion", tmp_path, download=False)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1] + b"\x07")
    with pytest.raises(RuntimeError, match=f"{path} has sha256 .* expected .* Kept in .*, content verified, for a "
                                           "rerun to decompress again: t10k-images-idx3-ubyte.gz"):
        datasets.prepare_raw("fashion", tmp_path, download=False)
    assert (raw / "t10k-images-idx3-ubyte.bad").exists() and (raw / "t10k-images-idx3-ubyte.gz").exists()
    loaded = datasets.load_torchvision("fashion", tmp_path, download=False)
    np.testing.assert_array_equal(loaded["test"][0].numpy(), truth["test"][0])


def test_changed_byte_inside_gz_is_named_moved_aside_and_not_converted(tmp_path, monkeypatch):
    files, _ = raw_contents("fashion")
    write_raw("fashion", tmp_path, compress=True)
    raw = datasets.raw_folder("fashion", tmp_path)
    trust_fashion_gz(monkeypatch, raw)
    content = bytearray(files["t10k-images-idx3-ubyte"])
    content[-1] ^= 0x01
    bad = raw / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(bytes(content)))
    bad_md5 = md5(bad)
    with pytest.raises(RuntimeError) as err:
        datasets.convert("fashion", tmp_path, tmp_path / "out.h5", download=False)
    message = str(err.value)
    assert f"{bad} has md5 {bad_md5}, expected {dict(FashionMNIST.resources)[bad.name]}" in message
    expected = datasets.CONTENT_SHA256["fashion"]["t10k-images-idx3-ubyte"]
    assert f"its content has sha256 {sha256(bytes(content))}, expected {expected}" in message
    assert not bad.exists() and (raw / "t10k-images-idx3-ubyte.gz.bad").exists()
    assert not (raw / "t10k-images-idx3-ubyte").exists()
    assert all((raw / f"{f}.gz").exists() for f in files if f != "t10k-images-idx3-ubyte")
    assert not (tmp_path / "out.h5").exists()


def test_debian_folder_is_found_without_configuration_and_left_untouched(tmp_path, monkeypatch, caplog):
    files, truth = raw_contents("fashion")
    system = write_system(files)  # recompressed: the md5s are not torchvision's, the content is genuine
    before = snapshot(system)
    probes, downloads = [], []
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: probes.append(a) or True)
    monkeypatch.setattr(datasets, "download_url", lambda *a, **k: downloads.append(a))
    caplog.set_level(logging.INFO, logger=datasets.__name__)
    datasets.convert("fashion", tmp_path / "res", tmp_path / "out.h5", download=True)
    assert probes == [] and downloads == []
    assert snapshot(system) == before
    raw = datasets.raw_folder("fashion", tmp_path / "res")
    assert sorted(p.name for p in raw.iterdir()) == sorted(files)
    used = [m for m in messages(caplog) if f"decompressed from {system}" in m and "content verified" in m]
    assert all(any(f"{f}.gz" in m for m in used) for f in files)
    for split in ("train", "test"):
        d = read_split(tmp_path / "out.h5", split)
        np.testing.assert_array_equal(d["images"][:, 0], truth[split][0] / np.float32(255.0))


def test_system_folders_can_be_switched_off(tmp_path):
    files, _ = raw_contents("fashion")
    system = write_system(files)
    with pytest.raises(RuntimeError, match="raw files missing"):
        datasets.convert("fashion", tmp_path / "res", tmp_path / "out.h5", download=False, system=False)
    assert not (tmp_path / "out.h5").exists()
    assert not any(datasets.raw_folder("fashion", tmp_path / "res").glob("*-ubyte"))
    datasets.convert("fashion", tmp_path / "res", tmp_path / "out.h5", download=False)  # the same files, found
    assert (tmp_path / "out.h5").exists() and sorted(p.name for p in system.iterdir()) == sorted(f"{f}.gz" for f in files)


@pytest.mark.parametrize("compress", [False, True])
def test_raw_folder_wins_over_debian_folder(tmp_path, monkeypatch, caplog, compress):
    # Without pinned digests both copies pass, so the arrays tell which one was read.
    monkeypatch.setattr(datasets, "CONTENT_SHA256", {})
    truth = write_raw("fashion", tmp_path, compress=compress)
    if compress:
        trust_fashion_gz(monkeypatch, datasets.raw_folder("fashion", tmp_path))
    system = write_system(raw_contents("fashion", shift=50)[0])
    before = snapshot(system)
    caplog.set_level(logging.INFO, logger=datasets.__name__)
    loaded = datasets.load_torchvision("fashion", tmp_path, download=False)
    for split in ("train", "test"):
        np.testing.assert_array_equal(loaded[split][0].numpy(), truth[split][0])
    assert not any(str(system) in m for m in messages(caplog))
    assert snapshot(system) == before


def test_corrupt_debian_file_is_skipped_named_and_left_untouched(tmp_path):
    files, _ = raw_contents("fashion")
    system = write_system(files)
    bad = system / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(files["train-labels-idx1-ubyte"][:-1] + b"\x08"))  # the last label is 9
    before = snapshot(system)
    with pytest.raises(RuntimeError, match="missing .*train-labels-idx1-ubyte") as err:
        datasets.convert("fashion", tmp_path / "res", tmp_path / "out.h5", download=False)
    assert f"{bad} decompresses to content with sha256" in str(err.value)
    assert "apt-get install --reinstall dataset-fashion-mnist" in str(err.value)
    assert snapshot(system) == before
    raw = datasets.raw_folder("fashion", tmp_path / "res")
    assert sorted(p.name for p in raw.iterdir()) == sorted(f for f in files if f != "train-labels-idx1-ubyte")
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("download", [False, True])
def test_fashion_offline_error_names_all_three_ways(tmp_path, download):
    with pytest.raises(RuntimeError) as err:
        datasets.convert("fashion", tmp_path / "res", tmp_path / "out.h5", download=download)
    message = str(err.value)
    raw = datasets.raw_folder("fashion", tmp_path / "res")
    assert f"put them in {raw}/" in message  # 1. by hand
    assert "apt-get install dataset-fashion-mnist" in message and "/usr/share/datasets/fashion-mnist/" in message
    assert f"{datasets.FASHION_SYSTEM_FOLDERS[0]}/" in message  # the folder actually searched
    assert "download enabled" in message and "internet" in message  # 3. the download
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.skipif(not all(p.is_file() for p in DEBIAN_GZ),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_real_debian_files_pass_the_content_check(tmp_path, monkeypatch, caplog):
    """The real (recompressed) archives of Debian's package against the real pinned digests; no conversion."""
    monkeypatch.setattr(datasets, "CONTENT_SHA256", REAL_CONTENT_SHA256)
    monkeypatch.setattr(datasets, "FASHION_SYSTEM_FOLDERS", REAL_SYSTEM_FOLDERS)
    before = snapshot(datasets.DEBIAN_FASHION_FOLDER)
    raw = datasets.prepare_raw("fashion", tmp_path, download=False)  # from the system folder
    assert {f: datasets.sha256_of(raw / f) for f in datasets.needed_files("fashion")} == REAL_CONTENT_SHA256["fashion"]
    for path in DEBIAN_GZ:  # the same archives put in a raw folder by hand: accepted by content or md5
        (raw / path.name).write_bytes(path.read_bytes())
    datasets.check_archives("fashion", raw)
    assert not list(raw.glob("*.bad"))
    assert snapshot(datasets.DEBIAN_FASHION_FOLDER) == before


# --- What a user reads: each error and log line, word for word -------------------------------------------------
# Each scenario below ends in an error (or none) and log lines; their text, with this test's temporary folder
# written <tmp>, is compared with tests/golden/datasets/<scenario>.txt. Archives are made deterministically (gzip
# mtime 0, fixed zip dates) so that the md5s the messages name are the same on every run. `make golden` rewrites
# the files after an intended change of wording; read the diff before committing it.

GOLDEN = Path(__file__).resolve().parent / "golden" / "datasets"


def fixed_gz(content: bytes) -> bytes:
    return gzip.compress(content, compresslevel=9, mtime=0)


def fixed_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def fashion_files() -> dict[str, bytes]:
    return raw_contents("fashion")[0]


def changed(content: bytes) -> bytes:
    return content[:-1] + bytes([content[-1] ^ 1])


def scenario_fashion_bad_archives(root: Path, monkeypatch) -> None:
    """train-images.gz absent; train-labels.gz of other content with a genuine file made from it (kept);
    t10k-images.gz not gzip at all with a changed file made from it (moved); t10k-labels.gz recompressed (accepted)."""
    files, raw = fashion_files(), datasets.raw_folder("fashion", root)
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(fixed_gz(b"other labels"))
    (raw / "train-labels-idx1-ubyte").write_bytes(files["train-labels-idx1-ubyte"])
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    (raw / "t10k-images-idx3-ubyte").write_bytes(changed(files["t10k-images-idx3-ubyte"]))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(fixed_gz(files["t10k-labels-idx1-ubyte"]))
    datasets.check_archives("fashion", raw)


def scenario_emnist_bad_zip(root: Path, monkeypatch) -> None:
    """A zip that is not one, with three files made from it: two genuine (were EMNIST's digests pinned, they would be
    kept) and one changed (moved with it)."""
    files, raw = raw_contents("emnist")[0], datasets.raw_folder("emnist", root)
    monkeypatch.setitem(datasets.CONTENT_SHA256, "emnist", {f: sha256(c) for f, c in files.items()})
    raw.mkdir(parents=True)
    (raw / "gzip.zip").write_bytes(b"not a zip")
    first, second, third, _ = datasets.needed_files("emnist")
    (raw / first).write_bytes(files[first])
    (raw / second).write_bytes(files[second])
    (raw / third).write_bytes(changed(files[third]))
    datasets.check_archives("emnist", raw)


def scenario_fashion_changed_files(root: Path, monkeypatch) -> None:
    """train-images absent; train-labels and t10k-labels changed beside genuine .gz (kept); t10k-images changed
    beside a .gz of other content (moved too)."""
    files, raw = fashion_files(), datasets.raw_folder("fashion", root)
    write_raw("fashion", root)
    (raw / "train-images-idx3-ubyte").unlink()
    for f in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f).write_bytes(changed(files[f]))
        (raw / f"{f}.gz").write_bytes(fixed_gz(files[f]))
    (raw / "t10k-images-idx3-ubyte").write_bytes(changed(files["t10k-images-idx3-ubyte"]))
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(fixed_gz(b"other images"))
    datasets.verify_content("fashion", raw)


def scenario_emnist_changed_file(root: Path, monkeypatch) -> None:
    """Were EMNIST's digests pinned, a changed file would be named with the EMNIST fix."""
    files, raw = raw_contents("emnist")[0], datasets.raw_folder("emnist", root)
    monkeypatch.setitem(datasets.CONTENT_SHA256, "emnist", {f: sha256(c) for f, c in files.items()})
    write_raw("emnist", root)
    second = datasets.needed_files("emnist")[1]
    (raw / second).write_bytes(changed(files[second]))
    datasets.verify_content("emnist", raw)


def scenario_fashion_offline_with_a_bad_system_file(root: Path, monkeypatch) -> None:
    files = fashion_files()
    write_system({**files, "t10k-labels-idx1-ubyte": b"other labels"})
    datasets.prepare_raw("fashion", root, download=False)


def scenario_fashion_from_debian(root: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_FOLDER", datasets.FASHION_SYSTEM_FOLDERS[0])
    write_system(fashion_files())
    datasets.prepare_raw("fashion", root, download=False)


def scenario_emnist_offline(root: Path, monkeypatch) -> None:
    datasets.prepare_raw("emnist", root, download=False)


def scenario_emnist_unreachable(root: Path, monkeypatch) -> None:
    datasets.prepare_raw("emnist", root, download=True)


def two_mirrors(monkeypatch) -> None:
    monkeypatch.setattr(FashionMNIST, "mirrors", ["https://one.example/fashion/", "http://two.example:8080/f/"])


def scenario_fashion_download_fails(root: Path, monkeypatch) -> None:
    """The network answers but both mirrors fail; a corrupt system file was skipped before; the raw folder exists."""
    import urllib.error

    two_mirrors(monkeypatch)
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: True)

    def failing(url, root, filename, md5):
        raise urllib.error.URLError(f"no route to {url.split('/')[2]}")

    monkeypatch.setattr(datasets, "download_url", failing)
    files = fashion_files()
    write_system({**files, "train-images-idx3-ubyte": b"other images"})
    datasets.raw_folder("fashion", root).mkdir(parents=True)
    datasets.prepare_raw("fashion", root, download=True)


def scenario_fashion_unreachable_with_two_mirrors_and_folders(root: Path, monkeypatch) -> None:
    """Two mirrors on two hosts, two system folders, one of them with a corrupt file, the other empty."""
    two_mirrors(monkeypatch)
    monkeypatch.setattr(datasets, "FASHION_SYSTEM_FOLDERS", (*datasets.FASHION_SYSTEM_FOLDERS, root / "system2"))
    write_system({"train-labels-idx1-ubyte": b"other labels"})
    probes = []
    monkeypatch.setattr(datasets, "reachable", lambda address: probes.append(address) or False)
    try:
        datasets.prepare_raw("fashion", root, download=True)
    finally:
        assert probes == [("one.example", 443), ("two.example", 8080)]


def scenario_fashion_from_an_unpinned_system_folder(root: Path, monkeypatch) -> None:
    """Without pinned digests the system files are taken unverified, and the log does not claim otherwise."""
    monkeypatch.setitem(datasets.CONTENT_SHA256, "fashion", {})
    write_system(fashion_files())
    datasets.prepare_raw("fashion", root, download=False)


def scenario_emnist_download_lacks_files(root: Path, monkeypatch) -> None:
    """The downloaded zip verifies but holds another split only."""
    payload = fixed_zip({"gzip/emnist-letters-train-images-idx3-ubyte.gz": fixed_gz(b"letters")})
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: True)
    monkeypatch.setattr(EMNIST, "md5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(datasets, "download_url", lambda url, root, filename, md5: (Path(root) / filename)
                        .write_bytes(payload))
    datasets.prepare_raw("emnist", root, download=True)


def scenario_emnist_gz_in_the_gzip_folder(root: Path, monkeypatch) -> None:
    files, raw = raw_contents("emnist")[0], datasets.raw_folder("emnist", root)
    (raw / "gzip").mkdir(parents=True)
    for f, content in files.items():
        (raw / "gzip" / f"{f}.gz").write_bytes(fixed_gz(content))
    datasets.prepare_raw("emnist", root, download=False)


def scenario_fashion_unreadable_idx(root: Path, monkeypatch) -> None:
    raw = datasets.raw_folder("fashion", root)
    write_raw("fashion", root)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 3)
    monkeypatch.setitem(datasets.CONTENT_SHA256, "fashion", {})
    datasets.load_split("fashion", root, "test")


def scenario_fashion_wrong_shape(root: Path, monkeypatch) -> None:
    raw = datasets.raw_folder("fashion", root)
    write_raw("fashion", root)
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_images(np.zeros((N_TEST, 27, 28), dtype=np.uint8)))
    monkeypatch.setitem(datasets.CONTENT_SHA256, "fashion", {})
    datasets.load_split("fashion", root, "test")


def scenario_unknown_dataset(root: Path, monkeypatch) -> None:
    datasets.dataset_class("mnist")


SCENARIOS = {name.removeprefix("scenario_").replace("_", "-"): fn for name, fn in globals().items()
             if name.startswith("scenario_")}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_errors_and_log_lines_are_word_for_word_the_golden_files(tmp_path, monkeypatch, caplog, golden, scenario):
    root = tmp_path / "res"
    caplog.set_level(logging.INFO, logger=datasets.__name__)
    try:
        SCENARIOS[scenario](root, monkeypatch)
        outcome = "no error"
    except (RuntimeError, ValueError) as err:
        outcome = f"{type(err).__name__}: {err}"
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    text = "\n".join([outcome, "", *(f"log: {m}" for m in messages(caplog)), "", *(f"file: {p}" for p in left)])
    golden({GOLDEN / f"{scenario}.txt": text.replace(str(tmp_path), "<tmp>") + "\n"})


def test_gunzip_raises_the_gzip_error_unless_a_digest_was_asked_for(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(gzip.BadGzipFile):
        datasets.gunzip(bad, tmp_path / "out")
    with pytest.raises(datasets.ContentMismatch) as err:
        datasets.gunzip(bad, tmp_path / "out", sha256="0" * 64)
    assert str(err.value) == f"{bad} is not a valid gzip file (BadGzipFile: Not a gzipped file (b'no'))"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url, env, address", [
    ("https://host.example/x.zip", {}, ("host.example", 443)),
    ("http://host.example/x.gz", {}, ("host.example", 80)),
    ("https://host.example:8443/x.zip", {}, ("host.example", 8443)),
    ("https://host.example/x.zip", {"https_proxy": "proxy.example:3128"}, ("proxy.example", 3128)),
    ("http://host.example/x.gz", {"http_proxy": "https://proxy.example"}, ("proxy.example", 443)),
    ("https://host.example/x.zip", {"https_proxy": "http://proxy.example:3128", "no_proxy": "host.example"},
     ("host.example", 443)),
])
def test_probe_address_is_where_urllib_connects_first(monkeypatch, url, env, address):
    for key in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert datasets.probe_address(url) == address


def test_reachable_gives_the_connection_its_timeout_and_does_not_wait_for_a_hanging_lookup(monkeypatch):
    """A name lookup can ignore the connect timeout, so the probe waits for its thread only `timeout` s: here the
    connection never returns, and the probe still answers no."""
    import threading

    release, timeouts = threading.Event(), []

    def hanging(address, timeout=None):
        timeouts.append(timeout)
        release.wait()
        raise OSError("released")

    monkeypatch.setattr(datasets.socket, "create_connection", hanging)
    try:
        assert REAL_REACHABLE(("host.example", 443), timeout=0.2) is False
        assert timeouts == [0.2]
    finally:
        release.set()


def test_download_skips_archives_present_and_gives_sockets_the_stall_timeout(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    write_raw("fashion", source, compress=True)
    trust_fashion_gz(monkeypatch, datasets.raw_folder("fashion", source))
    raw = datasets.raw_folder("fashion", tmp_path / "res")
    raw.mkdir(parents=True)
    first = FashionMNIST.resources[0][0]
    (raw / first).write_bytes((datasets.raw_folder("fashion", source) / first).read_bytes())
    monkeypatch.setattr(datasets, "reachable", lambda *a, **k: True)
    calls = []

    def fake_download(url, root, filename, md5):
        calls.append((filename, socket.getdefaulttimeout()))
        (Path(root) / filename).write_bytes((datasets.raw_folder("fashion", source) / filename).read_bytes())

    monkeypatch.setattr(datasets, "download_url", fake_download)
    datasets.prepare_raw("fashion", tmp_path / "res", download=True)
    assert calls == [(f, datasets.STALL_TIMEOUT_S) for f, _ in FashionMNIST.resources[1:]]
    assert socket.getdefaulttimeout() is None


@pytest.mark.parametrize("images, labels", [
    (torch.zeros(N_TEST, 28, 28, dtype=torch.float32), torch.zeros(N_TEST, dtype=torch.long)),  # not uint8
    (torch.zeros(N_TEST, 28, 27, dtype=torch.uint8), torch.zeros(N_TEST, dtype=torch.long)),  # not 28x28
    (torch.zeros(N_TEST, 28, 28, dtype=torch.uint8), torch.zeros(N_TEST - 1, dtype=torch.long)),  # n labels
])
def test_each_structure_fault_alone_is_refused(tmp_path, images, labels):
    with pytest.raises(RuntimeError, match="not n 28x28 uint8 images with n labels; replace them"):
        datasets.check_arrays("fashion", "test", images, labels, tmp_path)


def test_converted_file_names_its_source_and_the_raw_digests(tmp_path, caplog):
    write_raw("fashion", tmp_path)
    caplog.set_level(logging.INFO, logger=datasets.__name__)
    datasets.convert("fashion", tmp_path, tmp_path / "out.h5", download=False)
    raw = datasets.raw_folder("fashion", tmp_path)
    with h5py.File(tmp_path / "out.h5", "r") as h5:
        attrs = dict(h5.attrs)
    assert attrs["source"] == str(raw.resolve())
    digests = {f: sha256((raw / f).read_bytes()) for f in sorted(datasets.needed_files("fashion"))}
    assert attrs["raw_sha256"] == json.dumps(digests)  # sorted by file name
    assert messages(caplog)[-1] == f"wrote {tmp_path / 'out.h5'}: {N_TRAIN} train, {N_TEST} test images of fashion"


def test_system_folders_are_used_by_default(tmp_path):
    files, truth = raw_contents("fashion")
    write_system(files)
    loaded = datasets.load_torchvision("fashion", tmp_path / "res", download=False)
    np.testing.assert_array_equal(loaded["test"][0].numpy(), truth["test"][0])


def test_probe_address_of_a_url_without_a_host():
    assert datasets.probe_address("file:///data/x.gz") == ("", 80)
