"""EMNIST (digits) and Fashion-MNIST: fetch them with torchvision's own code, or take files put in place by hand
or installed by the system, verify what can be verified, and convert them to the shared HDF5 layout of `data.py`.

On disk torchvision reads uncompressed idx files from `<root>/EMNIST/raw/` and `<root>/FashionMNIST/raw/`. A file
that is absent there is looked for, in this order:

1. in the raw folder itself, as an archive torchvision publishes checksums for: Fashion-MNIST's four `*.gz` (one
   md5 each) and EMNIST's `gzip.zip` (one md5 for the whole zip; only the four digits files are taken out of it),
   or EMNIST's individual `.gz` (in `raw/` or `raw/gzip/`);
2. for Fashion-MNIST, in the system folders of `FASHION_SYSTEM_FOLDERS`, where Debian's package
   `dataset-fashion-mnist` puts the four `*.gz` (`/usr/share/datasets/fashion-mnist/`): found without any
   configuration, decompressed from there into the raw folder (the system folder is only read);
3. by a download, only with `download=True`: the mirror's host (or the configured proxy) is first probed with a
   short TCP connect, so that a machine without network fails at once, instead of hanging, with an error that
   names the files, where to fetch them and the folder to put them in (and, for Fashion-MNIST, Debian's
   package). The download itself is torchvision's `download_url`, which verifies the md5.

Fashion-MNIST is judged by content, not by how it was compressed: `CONTENT_SHA256` pins the sha256 of its four
decompressed idx files. An archive in the raw folder whose md5 is torchvision's passes at once; one whose md5
differs is still accepted (and logged as a recompressed archive) if what it decompresses to has the pinned
digest, as Debian's recompressed archives do. Every uncompressed Fashion-MNIST file used (placed by hand,
decompressed from an archive or from a system folder) is checked against its pinned digest. Anything in the raw
folder that fails is named with the expected and actual digest and moved aside to `*.bad`, so that it is never
used again, together with the files made from a failing archive and the archive beside a failing file, unless
their own content verifies: genuine data is never moved aside. The errors name the three ways to get genuine
files. A system archive that fails is never touched: it is skipped (and named in the error if the file is then
still missing).

For EMNIST no digest of the decompressed files is known: its zip is md5-checked as above (a failing one is moved
aside with the files made from it), and its `.gz` and uncompressed files are checked for their idx format, sizes
and label range only, as are all files at conversion.
"""

from __future__ import annotations

import gzip
import hashlib
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
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
# sha256 of the decompressed idx files (what torchvision reads), per dataset and file. Fashion-MNIST's were computed
# from the files of Debian's package dataset-fashion-mnist, whose decompressed md5s are the ones published for the
# canonical files (train-images f4a8712d7a061bf5bd6d2ca38dc4d50a, train-labels 9018921c3c673c538a1fc5bad174d6f9,
# t10k-images 8181f5470baa50b63fa0f6fddb340f0a, t10k-labels 15d484375f8d13e6eb1aabb0c3f46965). None is known
# for EMNIST, whose files get the structure checks only.
CONTENT_SHA256: dict[str, dict[str, str]] = {
    "fashion": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_FOLDER = Path("/usr/share/datasets/fashion-mnist")  # where that package puts the four *.gz
# Folders searched, in order, for Fashion-MNIST's `*-idx?-ubyte.gz` missing from the raw folder (only read).
FASHION_SYSTEM_FOLDERS: tuple[Path, ...] = (DEBIAN_FASHION_FOLDER,)

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


class ContentMismatch(ValueError):
    """A file whose content is not the one pinned in `CONTENT_SHA256` (or an archive that does not decompress)."""


def pinned_sha256(name: str, filename: str) -> str | None:
    """The pinned sha256 of the decompressed raw file `filename` of `name`, or None where none is known."""
    return CONTENT_SHA256.get(name, {}).get(filename)


def genuine(name: str, path: Path) -> bool:
    """Whether the raw file `path` of `name` has a pinned sha256 and its content has it."""
    expected = pinned_sha256(name, path.name)
    return expected is not None and sha256_of(path) == expected


GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def stream_gzip(src: Path, out: BinaryIO | None = None) -> str:
    """Decompress `src` chunk by chunk, into `out` if given; return the hex SHA-256 of the content."""
    digest = hashlib.sha256()
    with gzip.open(src, "rb") as fin:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
    return digest.hexdigest()


def gzip_content_sha256(path: Path) -> str:
    """Hex SHA-256 of what the gzip file `path` decompresses to; ContentMismatch if it does not decompress."""
    try:
        return stream_gzip(path)
    except GZIP_ERRORS as err:
        raise ContentMismatch(f"{path} is not a valid gzip file ({type(err).__name__}: {err})") from err


def gzip_content_problem(path: Path, expected: str) -> str | None:
    """None if `path` decompresses to content with sha256 `expected`, else what is wrong with it."""
    try:
        actual = gzip_content_sha256(path)
    except ContentMismatch as err:
        return str(err)
    return None if actual == expected else f"its content has sha256 {actual}, expected {expected}"


def fashion_fixes(raw: Path) -> str:
    """The three ways to get genuine Fashion-MNIST files, for the errors."""
    mirrors = dict.fromkeys(u.removesuffix(a.filename) for a in archives("fashion") for u in a.urls)
    return (f"(1) put them in {raw}/ by hand: download {', '.join(a.filename for a in archives('fashion'))} from "
            f"{' or '.join(mirrors)} (md5s in torchvision.datasets.FashionMNIST.resources; a recompressed copy is "
            "accepted when its content is genuine), or put the files uncompressed there; "
            f"(2) apt-get install {DEBIAN_FASHION_PACKAGE}, which puts the .gz in {DEBIAN_FASHION_FOLDER}/, where "
            "they are found without configuration; (3) rerun with download enabled (config `download: true`) on a "
            "machine with internet")


def check_archives(name: str, raw: Path) -> None:
    """Check every archive present in `raw`; move failing ones (and files made from them) aside and raise.

    The md5 torchvision publishes is the first check. An archive whose md5 differs is still accepted, and logged as
    recompressed, if what it decompresses to has the sha256 pinned in `CONTENT_SHA256` (Fashion-MNIST's `.gz`).
    A file made from a failing archive is kept only if its own content has the pinned sha256.
    """
    failures = []
    for archive in archives(name):
        path = raw / archive.filename
        if not path.is_file():
            continue
        actual = calculate_md5(path)
        if actual == archive.md5:
            continue
        problem = f"{path} has md5 {actual}, expected {archive.md5}"
        # A .gz is pinned by what it decompresses to; nothing is pinned for a zip (EMNIST's).
        expected = pinned_sha256(name, archive.filename.removesuffix(".gz"))
        if expected is not None:
            content_problem = gzip_content_problem(path, expected)
            if content_problem is None:
                log.info("%s: recompressed archive, content verified: %s has md5 %s, not torchvision's %s, but "
                         "decompresses to the pinned sha256 %s", name, path, actual, archive.md5, expected)
                continue
            problem += f", and {content_problem}"
        made = [f for f in derived_from(name, archive) if (raw / f).is_file()]
        kept = [f for f in made if genuine(name, raw / f)]
        moved = [move_aside(path), *(move_aside(raw / f) for f in made if f not in kept)]
        failures.append(f"{problem} (moved aside: {', '.join(p.name for p in moved)}"
                        + (f"; kept, content verified: {', '.join(kept)})" if kept else ")"))
    if failures:
        if name == "fashion":
            fix = f"Get genuine files in one of three ways: {fashion_fixes(raw)}; then delete the *.bad files."
        else:
            fix = f"Fetch it again ({', '.join(_urls(name))}) into {raw}/ and delete the *.bad files."
        raise RuntimeError(f"{name}: checksum mismatch, the file is corrupt or not the one torchvision expects: "
                           f"{'; '.join(failures)}. {fix}")


def verify_content(name: str, raw: Path) -> None:
    """Check every raw file of `name` in `raw` that has a pinned sha256; move failing ones aside and raise.

    A `.gz` beside a failing file is moved aside too if its own content fails; a genuine one is kept, so that a
    rerun decompresses the file from it again.
    """
    failures, moved, kept = [], [], []
    for filename in needed_files(name):
        path, expected = raw / filename, pinned_sha256(name, filename)
        if expected is None or not path.is_file():
            continue
        actual = sha256_of(path)
        if actual == expected:
            continue
        moved.append(move_aside(path))
        archive = raw / f"{filename}.gz"
        if archive.is_file():
            if gzip_content_problem(archive, expected) is None:
                kept.append(archive.name)
            else:
                moved.append(move_aside(archive))
        failures.append(f"{path} has sha256 {actual}, expected {expected}")
    if failures:
        again = (f" Kept in {raw}/, content verified, for a rerun to decompress again: {', '.join(kept)}."
                 if kept else "")
        fix = (f"Get genuine files in one of three ways: {fashion_fixes(raw)}" if name == "fashion"
               else f"Fetch them again ({', '.join(_urls(name))}) into {raw}/")
        raise RuntimeError(f"{name}: content mismatch, not the genuine file: {'; '.join(failures)} (moved aside: "
                           f"{', '.join(p.name for p in moved)}).{again} {fix}; then delete the *.bad files.")


def gunzip(src: Path, dest: Path, sha256: str | None = None) -> None:
    """Decompress `src` to `dest` atomically; with `sha256`, ContentMismatch (and no `dest`) if the content differs."""
    with atomic_path(dest) as tmp:
        try:
            with open(tmp, "wb") as fout:
                actual = stream_gzip(src, fout)
        except GZIP_ERRORS as err:
            if sha256 is None:
                raise
            raise ContentMismatch(f"{src} is not a valid gzip file ({type(err).__name__}: {err})") from err
        if sha256 is not None and actual != sha256:
            raise ContentMismatch(f"{src} decompresses to content with sha256 {actual}, expected {sha256}")


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

    Archives must have passed `check_archives` first. Fashion-MNIST's `.gz` are checked there (md5, else content);
    EMNIST's individual `.gz` (in `raw/` or in `raw/gzip/`, where torchvision unpacks the zip) have no published md5.
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


def take_from_system(name: str, raw: Path, missing: list[str]) -> tuple[list[str], list[str]]:
    """Decompress each missing Fashion-MNIST file from a `FASHION_SYSTEM_FOLDERS` `.gz` into `raw`, verified by content.

    The system folders are only read. A system archive whose content fails is skipped (the next folder is tried).
    Return the names still missing and, for the error, what was wrong with the system archives skipped.
    """
    if name != "fashion":
        return missing, []
    still, problems = [], []
    for filename in missing:
        expected = pinned_sha256(name, filename)
        for src in (folder / f"{filename}.gz" for folder in FASHION_SYSTEM_FOLDERS):
            if not src.is_file():
                continue
            try:
                gunzip(src, raw / filename, sha256=expected)
            except ContentMismatch as err:
                log.warning("%s: not using %s: %s", name, src, err)
                problems.append(f"{err} (reinstall it: apt-get install --reinstall {DEBIAN_FASHION_PACKAGE})")
                continue
            origin = f"Debian's {DEBIAN_FASHION_PACKAGE}" if src.parent == DEBIAN_FASHION_FOLDER else "system folder"
            log.info("%s: %s decompressed from %s (%s)%s", name, filename, src, origin,
                     ", content verified" if expected else "")
            break
        else:
            still.append(filename)
    return still, problems


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
    if name == "fashion":
        folders = ", ".join(f"{folder}/" for folder in FASHION_SYSTEM_FOLDERS)
        return RuntimeError(
            f"{name}: raw files missing from {raw}/: {', '.join(missing)}; not in the system folders ({folders}) "
            f"either; no download ({reason}). Get them in one of three ways: {fashion_fixes(raw)}. Files put there "
            "by hand are used without a download and checked by content."
        )
    (archive,) = archives(name)
    fetch = (f"download {archive.urls[0]} (md5 {archive.md5}) and put {archive.filename} in {raw}/, or put "
             f"the files listed (uncompressed, or as .gz from the zip's gzip/ folder) there")
    return RuntimeError(
        f"{name}: raw files missing from {raw}/: {', '.join(missing)}; no download ({reason}). On a machine with "
        f"internet {fetch}. Files put there by hand are used without a download (archives are md5-checked); "
        "alternatively rerun with download enabled where the network is reachable."
    )


def download_missing(name: str, root: str | os.PathLike, missing: list[str], skipped: Sequence[str] = ()) -> None:
    """Fetch the archives of `name` with torchvision's `download_url` (md5-checked), failing fast when offline.

    `skipped`: what was wrong with the other sources, added to the error if the download fails too.
    """
    raw = raw_folder(name, root)
    addresses = list(dict.fromkeys(probe_address(u) for u in _urls(name)))
    if not any(reachable(a) for a in addresses):
        hosts = ", ".join(f"{host}:{port}" for host, port in addresses)
        raise offline_error(name, root, missing, "; ".join(
            [f"could not connect to {hosts}, tried for up to {PROBE_TIMEOUT_S:g} s", *skipped]))
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
            raise offline_error(name, root, missing, "; ".join(["download failed: " + "; ".join(errors), *skipped]))


def prepare_raw(name: str, root: str | os.PathLike, download: bool, system: bool = True) -> Path:
    """Make sure the uncompressed raw files torchvision reads are in place and verified; return the raw folder.

    Sources, in order: the raw folder (files, or archives beside them), the system folders (Fashion-MNIST; only
    with `system`), a download (only with `download`). Every file with a pinned digest is checked by content at
    the end.
    """
    raw = raw_folder(name, root)
    check_archives(name, raw)
    missing = extract_missing(name, raw)  # all of them where the raw folder does not exist yet
    problems: list[str] = []
    if system:
        missing, problems = take_from_system(name, raw, missing)
    if missing:
        if not download:
            raise offline_error(name, root, missing, "; ".join(["download=False", *problems]))
        raw.mkdir(parents=True, exist_ok=True)
        download_missing(name, root, missing, problems)
        check_archives(name, raw)
        missing = extract_missing(name, raw)
        if missing:
            raise offline_error(name, root, missing, "the downloaded archives lack them")
    verify_content(name, raw)
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


def load_torchvision(name: str, root: str | os.PathLike, download: bool,
                     system: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both splits of `name` as uint8 images (n,28,28), upright, and int64 labels, fetching files if allowed."""
    prepare_raw(name, root, download, system)
    return {split: load_split(name, root, split) for split in SPLITS}


def to_arrays(images: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """uint8 images (n,28,28) and labels as the shared layout: float32 (n,1,28,28) in [0,1] and int64 (n,)."""
    return {"images": (images.numpy().astype(np.float32) / 255.0)[:, None],
            "labels": labels.numpy().astype(np.int64)}


def convert(name: str, root: str | os.PathLike, out_h5: str | os.PathLike, download: bool,
            system: bool = True) -> None:
    """Load `name` from `root` (else from the system folders if `system`, else downloading if allowed) and write
    it to `out_h5` in the layout of `data.py`."""
    loaded = load_torchvision(name, root, download, system)
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
