"""EMNIST (digits) and Fashion-MNIST: fetch them with torchvision's own code, or take files put in place by hand,
verify what can be verified, and convert them to the shared HDF5 layout of `data.py`.

On disk torchvision reads uncompressed idx files from `<root>/EMNIST/raw/` and `<root>/FashionMNIST/raw/`. When
they are absent they are made from the archives torchvision publishes checksums for, if those lie in the same
folder: Fashion-MNIST's four `*.gz` (one md5 each) and EMNIST's `gzip.zip` (one md5 for the whole zip; only the
four digits files are taken out of it). Such an archive is md5-checked before use and, if it fails, moved aside to
`*.bad` together with any file made from it. torchvision publishes no checksum for the uncompressed files nor for
EMNIST's individual `.gz` files: those are used as they are, checked only for their idx format and sizes.

A download is tried only for what is still missing, and only with `download=True`: the mirror's host (or the
configured proxy) is first probed with a short TCP connect, so that a machine without network fails at once with
an error that says which files to fetch from where and the folder to put them in, instead of hanging. The
download itself is torchvision's `download_url`, which verifies the md5.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.datasets import EMNIST, MNIST, FashionMNIST
from torchvision.datasets.utils import calculate_md5, download_url

from .data import SPLITS, write_dataset
from .fonts import sha256_of
from .io import atomic_path

DATASETS = ("emnist", "fashion")
EMNIST_SPLIT = "digits"
N_CLASSES = 10
IMAGE_SIZE = 28
# (train, test) sizes of the datasets the paper uses; other sizes mean the wrong files (e.g. another EMNIST split).
EXPECTED_SIZES = {"emnist": (240_000, 40_000), "fashion": (60_000, 10_000)}
PROBE_TIMEOUT_S = 3.0  # TCP connect to the mirror (or proxy) before a download is tried
STALL_TIMEOUT_S = 60.0  # socket timeout while downloading, so a stalled transfer fails instead of hanging

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """A file torchvision downloads into the raw folder: its name, its md5 and the URLs it comes from."""

    filename: str
    md5: str
    urls: tuple[str, ...]


def dataset_class(name: str) -> type[MNIST]:
    """The torchvision class that reads dataset `name`."""
    if name == "emnist":
        return EMNIST
    if name == "fashion":
        return FashionMNIST
    raise ValueError(f"dataset must be one of {DATASETS}, got '{name}'")


def raw_folder(name: str, root: str | os.PathLike) -> Path:
    """The folder torchvision reads the raw files from (`<root>/<ClassName>/raw`, as in `MNIST.raw_folder`)."""
    return Path(root) / dataset_class(name).__name__ / "raw"


def raw_files(name: str) -> dict[str, tuple[str, str]]:
    """Per split, the (images, labels) file names torchvision reads, uncompressed, from the raw folder."""
    if name == "emnist":  # EMNIST._file_prefix
        return {s: (f"emnist-{EMNIST_SPLIT}-{s}-images-idx3-ubyte", f"emnist-{EMNIST_SPLIT}-{s}-labels-idx1-ubyte")
                for s in SPLITS}
    dataset_class(name)
    return {s: (f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte") for s, p in (("train", "train"), ("test", "t10k"))}


def needed_files(name: str) -> list[str]:
    """All raw file names one conversion reads, train first."""
    return [f for split in SPLITS for f in raw_files(name)[split]]


def archives(name: str) -> list[Archive]:
    """The archives torchvision downloads for `name`, with the md5s it checks them against (read at call time)."""
    cls = dataset_class(name)
    if name == "emnist":
        return [Archive(Path(urllib.parse.urlparse(cls.url).path).name, cls.md5, (cls.url,))]
    return [Archive(f, md5, tuple(m + f for m in cls.mirrors)) for f, md5 in cls.resources]


def derived_from(name: str, archive: Archive) -> list[str]:
    """The raw files made from `archive` (so they are distrusted with it)."""
    if name == "emnist":
        return needed_files(name)
    return [archive.filename.removesuffix(".gz")]


def move_aside(path: Path) -> Path:
    """Rename `path` to `<path>.bad` (replacing an older one) so it is never used again; return the new path."""
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    return bad


def check_archives(name: str, raw: Path) -> None:
    """md5-check every archive present in `raw`; move failing ones (and files made from them) aside and raise."""
    failures = []
    for archive in archives(name):
        path = raw / archive.filename
        if not path.is_file():
            continue
        actual = calculate_md5(path)
        if actual == archive.md5:
            continue
        moved = [move_aside(path)]
        moved += [move_aside(raw / f) for f in derived_from(name, archive) if (raw / f).is_file()]
        failures.append(f"{path} has md5 {actual}, expected {archive.md5} (moved aside: "
                        f"{', '.join(p.name for p in moved)})")
    if failures:
        raise RuntimeError(f"{name}: checksum mismatch, the file is corrupt or not the one torchvision expects: "
                           f"{'; '.join(failures)}. Fetch it again ({', '.join(_urls(name))}) into {raw}/ and "
                           "delete the *.bad files.")


def gunzip(src: Path, dest: Path) -> None:
    """Decompress `src` to `dest` atomically."""
    with atomic_path(dest) as tmp, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def extract_from_zip(zip_path: Path, filename: str, dest: Path) -> bool:
    """Decompress the member `<...>/<filename>.gz` of EMNIST's zip to `dest`; False if the zip lacks it."""
    with zipfile.ZipFile(zip_path) as zf:
        member = next((m for m in zf.namelist() if Path(m).name == filename + ".gz"), None)
        if member is None:
            return False
        with atomic_path(dest) as tmp, zf.open(member) as packed, gzip.open(packed, "rb") as fin, \
                open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return True


def extract_missing(name: str, raw: Path) -> list[str]:
    """Make each absent raw file from a `.gz` or EMNIST zip beside it; return the names still missing.

    Archives must have passed `check_archives` first. Fashion-MNIST's `.gz` are md5-checked there; EMNIST's
    individual `.gz` (in `raw/` or in `raw/gzip/`, where torchvision unpacks the zip) have no published md5.
    """
    missing = []
    zips = [raw / a.filename for a in archives(name) if a.filename.endswith(".zip")]
    for f in needed_files(name):
        dest = raw / f
        if dest.is_file():
            continue
        packed = next((p for p in (raw / f"{f}.gz", raw / "gzip" / f"{f}.gz") if p.is_file()), None)
        if packed is not None:
            log.info("decompressing %s", packed)
            gunzip(packed, dest)
        elif not any(z.is_file() and extract_from_zip(z, f, dest) for z in zips):
            missing.append(f)
    return missing


def probe_address(url: str) -> tuple[str, int]:
    """The (host, port) a download of `url` connects to first: the proxy urllib would use, else the URL's host."""
    parts = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def reachable(address: tuple[str, int], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to (host, port) opens within `timeout` s, name lookup included."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)  # a thread, because name lookup ignores the timeout
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets opened inside the block (torchvision's urlopen sets none) a timeout, so stalls fail."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _urls(name: str) -> list[str]:
    """Every URL the archives of `name` come from."""
    return [u for a in archives(name) for u in a.urls]


def offline_error(name: str, root: str | os.PathLike, missing: list[str], reason: str) -> RuntimeError:
    """The error for raw files that are absent and cannot be downloaded: what to fetch, from where, to where."""
    raw = raw_folder(name, root)
    if name == "emnist":
        (archive,) = archives(name)
        fetch = (f"download {archive.urls[0]} (md5 {archive.md5}) and put {archive.filename} in {raw}/, or put "
                 f"the files listed (uncompressed, or as .gz from the zip's gzip/ folder) there")
    else:
        mirrors = dict.fromkeys(u.removesuffix(a.filename) for a in archives(name) for u in a.urls)
        fetch = (f"download {', '.join(a.filename for a in archives(name))} from {' or '.join(mirrors)} "
                 f"(md5s in torchvision.datasets.FashionMNIST.resources) and put them in {raw}/ (or the files "
                 "listed, uncompressed)")
    return RuntimeError(
        f"{name}: raw files missing from {raw}/: {', '.join(missing)}; no download ({reason}). On a machine with "
        f"internet {fetch}. Files put there by hand are used without a download (archives are md5-checked); "
        "alternatively rerun with download enabled where the network is reachable."
    )


def download_missing(name: str, root: str | os.PathLike, missing: list[str]) -> None:
    """Fetch the archives of `name` with torchvision's `download_url` (md5-checked), failing fast when offline."""
    raw = raw_folder(name, root)
    addresses = list(dict.fromkeys(probe_address(u) for u in _urls(name)))
    if not any(reachable(a) for a in addresses):
        hosts = ", ".join(f"{host}:{port}" for host, port in addresses)
        raise offline_error(name, root, missing, f"could not connect to {hosts}, tried for up to {PROBE_TIMEOUT_S:g} s")
    for archive in archives(name):
        if (raw / archive.filename).is_file():
            continue
        errors = []
        for url in archive.urls:
            try:
                with socket_timeout(STALL_TIMEOUT_S):
                    download_url(url, str(raw), archive.filename, archive.md5)
                break
            except (urllib.error.URLError, OSError, RuntimeError) as err:
                errors.append(f"{url}: {err}")
        else:
            check_archives(name, raw)  # a corrupt download is named and moved aside here
            raise offline_error(name, root, missing, "download failed: " + "; ".join(errors))


def prepare_raw(name: str, root: str | os.PathLike, download: bool) -> Path:
    """Make sure the uncompressed raw files torchvision reads are in place; return the raw folder."""
    raw = raw_folder(name, root)
    check_archives(name, raw)
    missing = extract_missing(name, raw) if raw.is_dir() else needed_files(name)
    if missing:
        if not download:
            raise offline_error(name, root, missing, "download=False")
        raw.mkdir(parents=True, exist_ok=True)
        download_missing(name, root, missing)
        check_archives(name, raw)
        missing = extract_missing(name, raw)
        if missing:
            raise offline_error(name, root, missing, "the downloaded archives lack them")
    return raw


def upright_emnist(images: torch.Tensor) -> torch.Tensor:
    """Transpose EMNIST images (n,28,28): its files store each image transposed relative to MNIST."""
    return images.transpose(1, 2).contiguous()


def check_arrays(name: str, split: str, images: torch.Tensor, labels: torch.Tensor, raw: Path) -> None:
    """Raise if a split is not `n` 28x28 uint8 images with labels 0-9 in the paper's numbers."""
    files = ", ".join(raw_files(name)[split])
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE) \
            or len(images) != len(labels):
        raise RuntimeError(f"{name}:{split}: {files} in {raw} hold {tuple(images.shape)} {images.dtype} images and "
                           f"{len(labels)} labels, not n 28x28 uint8 images with n labels; replace them")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= N_CLASSES):
        raise RuntimeError(f"{name}:{split}: labels in {files} range over {int(labels.min())}..{int(labels.max())}, "
                           f"not 0..{N_CLASSES - 1}; these are not the {name} files the paper uses")
    expected = EXPECTED_SIZES[name][SPLITS.index(split)]
    if len(images) != expected:
        raise RuntimeError(f"{name}:{split}: {files} in {raw} hold {len(images)} images, the paper's dataset has "
                           f"{expected} (wrong or truncated files, e.g. another EMNIST split); replace them")


def load_split(name: str, root: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split with the torchvision class (no download), as uint8 images (n,28,28) and int64 labels."""
    kwargs = {"split": EMNIST_SPLIT} if name == "emnist" else {}
    raw = raw_folder(name, root)
    try:
        ds = dataset_class(name)(str(root), train=split == "train", download=False, **kwargs)
    except (AssertionError, RuntimeError, ValueError, TypeError) as err:
        raise RuntimeError(f"{name}:{split}: torchvision cannot read {', '.join(raw_files(name)[split])} in {raw} "
                           f"({type(err).__name__}: {err}); they are not valid idx files, delete and fetch them "
                           "again") from err
    images, labels = ds.data, ds.targets.long()
    check_arrays(name, split, images, labels, raw)
    return (upright_emnist(images) if name == "emnist" else images), labels


def load_torchvision(name: str, root: str | os.PathLike,
                     download: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both splits of `name` as uint8 images (n,28,28), upright, and int64 labels, fetching files if allowed."""
    prepare_raw(name, root, download)
    return {split: load_split(name, root, split) for split in SPLITS}


def to_arrays(images: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """uint8 images (n,28,28) and labels as the shared layout: float32 (n,1,28,28) in [0,1] and int64 (n,)."""
    return {"images": (images.numpy().astype(np.float32) / 255.0)[:, None],
            "labels": labels.numpy().astype(np.int64)}


def convert(name: str, root: str | os.PathLike, out_h5: str | os.PathLike, download: bool) -> None:
    """Load `name` from `root` (downloading if allowed) and write it to `out_h5` in the layout of `data.py`."""
    loaded = load_torchvision(name, root, download)
    splits = {split: to_arrays(*loaded[split]) for split in SPLITS}
    raw = raw_folder(name, root)
    attrs = {
        "dataset": name,
        "source_split": EMNIST_SPLIT if name == "emnist" else "all",
        "n_classes": N_CLASSES,
        "n_train": len(splits["train"]["labels"]),
        "n_test": len(splits["test"]["labels"]),
        "source": str(raw.resolve()),
        "raw_sha256": json.dumps({f: sha256_of(raw / f) for f in needed_files(name)}, sort_keys=True),
        "torchvision_version": torchvision.__version__,
    }
    write_dataset(out_h5, splits, attrs=attrs)
    log.info("wrote %s: %d train, %d test images of %s", out_h5, attrs["n_train"], attrs["n_test"], name)
