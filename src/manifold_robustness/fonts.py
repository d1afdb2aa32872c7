"""Font discovery, the optional pinned font archive, and the glyph bank that FONTS is rendered from.

A font enters the bank when it maps each of A-J, renders each non-empty and inside the canvas, renders no
two letters alike, is not a copy of a font already in the bank, and its letters look like A-J (each glyph is
closest, among all other fonts' glyphs, to one of the same letter; see `letters_recognized`). Every rejected font is reported with its reason.

A pinned font set (`fonts.source: pinned`) is a manifest in `sha256sum` format: the font files it lists are
taken wherever they are found, each checked by its digest, and every other font on the machine is ignored, so
two machines render the same FONTS whatever else they have installed. Bundled sets live in `font_sets/`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont

LETTERS = "ABCDEFGHIJ"
FONT_SUFFIXES = (".ttf", ".otf")
MIN_FONTS_FOR_LETTER_CHECK = 5
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts")
FONT_SETS_DIR = Path(__file__).with_name("font_sets")
# Barcode fonts draw A-J as bars; several of them in one archive (Libre Barcode 39, 128, EAN13, ...) would pass
# the letter check by resembling each other.
BARCODE_FAMILY = re.compile(r"barcode", re.IGNORECASE)
ORDERS = ("shuffle", "content")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FontVerdict:
    """Whether one font file made it into the glyph bank, and why not."""

    path: str
    kept: bool
    reason: str = ""


def matplotlib_font_dir() -> Path:
    """The folder of TrueType fonts that matplotlib ships."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def discover_font_files(dirs: list[str | os.PathLike]) -> list[Path]:
    """All .ttf/.otf files under `dirs`, sorted by name and then path so the order is machine-independent."""
    found: dict[Path, Path] = {}
    for d in dirs:
        root = Path(d).expanduser()
        if not root.is_dir():
            continue
        for p in root.rglob("*"):
            if p.suffix.lower() in FONT_SUFFIXES and p.is_file():
                found.setdefault(p.resolve(), p)
    return sorted(found.values(), key=lambda p: (p.name.lower(), str(p)))


def default_font_dirs(include_matplotlib: bool, include_system: bool, extra: list[str]) -> list[str]:
    """The folders searched for fonts by the default (offline) configuration."""
    dirs: list[str] = []
    if include_matplotlib:
        dirs.append(str(matplotlib_font_dir()))
    if include_system:
        dirs.extend(SYSTEM_FONT_DIRS)
    return dirs + list(extra)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def font_set_manifest(name_or_path: str) -> Path:
    """The manifest of a bundled font set (by name, e.g. `matplotlib-3.11.2`) or of a manifest file (by path)."""
    bundled = FONT_SETS_DIR / f"{name_or_path}.sha256"
    if bundled.is_file():
        return bundled
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    names = sorted(p.stem for p in FONT_SETS_DIR.glob("*.sha256"))
    raise FileNotFoundError(f"fonts.pinned is '{name_or_path}', which is neither a bundled font set ({', '.join(names)}) "
                            "nor a manifest file; give one of those names or the path of a file written by "
                            "`sha256sum *.ttf`")


def read_manifest(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(sha256, file name) pairs of a manifest in `sha256sum` format, in file-name order."""
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.strip().partition(" ")
        name = Path(name.strip().lstrip("*")).name
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{path}, line {number}: expected '<sha256 in hex>  <font file name>', got {line!r}")
        entries.append((digest, name))
    if not entries:
        raise ValueError(f"{path} lists no fonts; write it with `sha256sum *.ttf > {Path(path).name}`")
    return sorted(entries, key=lambda e: (e[1].lower(), e[0]))


def font_set_digest(digests: list[str]) -> str:
    """One SHA-256 for a set of font files: of their sorted digests, one per line. Two runs whose digests agree
    rendered from the same font files."""
    return hashlib.sha256("".join(f"{d}\n" for d in sorted(digests)).encode()).hexdigest()


def pinned_font_files(manifest: str | os.PathLike, dirs: list[str | os.PathLike]) -> list[Path]:
    """The files of a pinned set, found under `dirs` by name and checked by digest, in the manifest's order.

    A listed font that is missing, or found only with other content, is an error naming the file, the folders
    searched and the fix; fonts not listed are never returned."""
    entries = read_manifest(manifest)
    by_name: dict[str, list[Path]] = {}
    for p in discover_font_files(dirs):
        by_name.setdefault(p.name, []).append(p)
    chosen, problems = [], []
    for digest, name in entries:
        found = by_name.get(name, [])
        match = next((p for p in found if sha256_of(p) == digest), None)
        if match is not None:
            chosen.append(match)
        elif found:
            problems.append(f"{name} is at {found[0]} but its content differs (sha256 {sha256_of(found[0])}, "
                            f"listed {digest})")
        else:
            problems.append(f"{name} was not found")
    if problems:
        raise RuntimeError(
            f"the pinned font set {manifest} cannot be assembled from {', '.join(map(str, dirs))}: "
            f"{'; '.join(problems[:5])}{' and more' if len(problems) > 5 else ''}. Install the versions it was "
            "made from (the bundled matplotlib set needs the matplotlib pinned in pyproject.toml: run `make`), "
            "add the folder holding them under fonts.extra_dirs, or set fonts.source: system to use whatever "
            "fonts this machine has (the numbers then depend on them)")
    return chosen


def fetch_archive(url: str, dest: str | os.PathLike, sha256: str = "") -> str:
    """Download `url` to `dest` (atomically) unless it is already there; verify and return its SHA-256.

    With an empty `sha256` the checksum is recorded beside the archive at first download and enforced
    afterwards. A file that fails its checksum is moved aside to `<dest>.bad` and never used.
    """
    dest = Path(dest)
    record = dest.with_name(dest.name + ".sha256")
    expected = sha256 or (record.read_text().strip() if record.exists() else "")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.download")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as err:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"could not download the font archive {url} ({err}). Without a network, download it elsewhere "
                f"and put it at {dest}; it is then used as is (and checked against sha256 if the config gives one)."
            ) from err
        os.replace(tmp, dest)
    actual = sha256_of(dest)
    if expected and actual != expected:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(dest, bad)
        raise RuntimeError(
            f"font archive {dest} has sha256 {actual}, expected {expected}; it was moved to {bad}. "
            "Delete it, or fix fonts.archive.sha256 in the config if the archive was updated on purpose."
        )
    if not expected:
        record.write_text(actual + "\n")
        log.warning("no sha256 given for %s; recorded %s in %s and will enforce it from now on", url, actual, record)
    return actual


def extract_fonts(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract only the .ttf/.otf members of a zip or tar archive into `dest`; return the extracted files."""
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.lower().endswith(FONT_SUFFIXES)]
            for m in members:
                zf.extract(m, tmp)  # ZipFile.extract refuses paths that leave `tmp`
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(FONT_SUFFIXES)]
            tf.extractall(tmp, members=members, filter="data")
    else:
        raise RuntimeError(f"{archive} is neither a zip nor a tar archive; check fonts.archive.url")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return discover_font_files([dest])


def render_letters(path: str | os.PathLike, size: int = 28, point_size: int = 21) -> np.ndarray:
    """Render A-J white on black, centred by their ink bounding box, as float32 (10, size, size) in [0, 1]."""
    font = ImageFont.truetype(str(path), point_size)
    out = np.zeros((len(LETTERS), size, size), dtype=np.float32)
    for k, char in enumerate(LETTERS):
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
        if right - left > size or bottom - top > size:
            raise ValueError(f"letter {char} is {right - left}x{bottom - top} px, larger than the {size}px canvas")
        draw.text(((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top), char, fill=255, font=font)
        out[k] = np.asarray(img, dtype=np.float32) / 255.0
    return out


def missing_letters(path: str | os.PathLike) -> str:
    """Letters among A-J that the font's character map does not cover (they would render as .notdef)."""
    with TTFont(str(path), lazy=True, fontNumber=0) as tt:
        cmap = tt.getBestCmap() or {}
    return "".join(c for c in LETTERS if ord(c) not in cmap)


def not_letters(path: str | os.PathLike) -> str:
    """Why a font draws something other than letters ('' where it draws letters): a symbol font (a Microsoft
    Symbol character map: its codes stand for pictures) or a barcode font (by its family name)."""
    with TTFont(str(path), lazy=True, fontNumber=0) as tt:
        if "cmap" in tt and any(t.platformID == 3 and t.platEncID == 0 for t in tt["cmap"].tables):
            return "a symbol font (Microsoft Symbol character map)"
        family = (tt["name"].getBestFamilyName() or "") if "name" in tt else ""
    return f"a barcode font (family '{family}')" if BARCODE_FAMILY.search(family) else ""


def consideration_order(paths: list[Path], seed: int, order: str = "shuffle") -> list[Path]:
    """The order in which fonts are considered (the first `max_fonts` that pass are kept, in this order).

    `shuffle`: a seeded shuffle of the whole list, so every font's place depends on every other file. `content`:
    sorted by a seeded hash of each file's own sha256, so a font's place among the others depends on its content
    alone: files added to or removed from an archive never reorder the rest, and the same files anywhere on any
    machine give the same order."""
    if order == "content":
        return sorted(paths, key=lambda p: (hashlib.sha256(f"{seed}:{sha256_of(p)}".encode()).hexdigest(), str(p)))
    if order != "shuffle":
        raise ValueError(f"unknown font order '{order}'; use one of {ORDERS}")
    shuffled = list(paths)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def basic_check(path: Path, glyphs_of: dict[Path, np.ndarray], size: int, point_size: int) -> str:
    """Return why the font fails the per-font checks, or '' if it passes (its glyphs are stored in `glyphs_of`)."""
    try:
        other = not_letters(path)
        if other:
            return other
        missing = missing_letters(path)
        if missing:
            return f"no glyph for {missing} in its character map"
        glyphs = render_letters(path, size, point_size)
    except (OSError, TTLibError, ValueError) as err:
        return f"cannot render: {err}"
    ink = (glyphs > 0.5).sum(axis=(1, 2))
    if (ink < 5).any():
        return f"glyph {LETTERS[int(np.argmin(ink))]} is empty"
    flat = glyphs.reshape(len(LETTERS), -1)
    for i in range(len(LETTERS)):
        for j in range(i + 1, len(LETTERS)):
            if np.array_equal(flat[i], flat[j]):
                return f"glyphs {LETTERS[i]} and {LETTERS[j]} are identical"
    glyphs_of[path] = glyphs
    return ""


def _standardize(glyphs: np.ndarray) -> np.ndarray:
    """Flatten glyphs (..., H, W) to zero-mean unit-norm vectors, so dot products are correlations."""
    flat = glyphs.reshape(*glyphs.shape[:-2], -1).astype(np.float64)
    flat = flat - flat.mean(axis=-1, keepdims=True)
    return flat / (np.linalg.norm(flat, axis=-1, keepdims=True) + 1e-8)


def letters_recognized(banks: np.ndarray, rows_per_block: int = 2048) -> np.ndarray:
    """For each font of `banks` (F, 10, H, W), how many of its glyphs have a glyph of the same letter as their
    most correlated glyph among all other fonts (leave-one-font-out nearest neighbour).

    The correlations are computed `rows_per_block` glyphs at a time, so memory grows with F, not F^2: the whole
    matrix would take 7 GB at 3000 fonts."""
    vecs = _standardize(banks)
    n_fonts, n_letters = vecs.shape[:2]
    labels = np.tile(np.arange(n_letters), n_fonts)
    font_of = np.repeat(np.arange(n_fonts), n_letters)
    flat = vecs.reshape(n_fonts * n_letters, -1)
    nearest = np.empty(len(flat), dtype=np.int64)
    for start in range(0, len(flat), rows_per_block):
        rows = slice(start, start + rows_per_block)
        corr = flat[rows] @ flat.T
        corr[font_of[rows, None] == font_of[None, :]] = -np.inf
        nearest[rows] = corr.argmax(axis=1)
    hits = labels[nearest] == labels
    return hits.reshape(n_fonts, n_letters).sum(axis=1)


def build_glyph_bank(
    paths: list[Path],
    max_fonts: int,
    shuffle_seed: int,
    min_recognized: int = 8,
    size: int = 28,
    point_size: int = 21,
    searched: tuple[str, ...] = (),
    order: str = "shuffle",
) -> tuple[np.ndarray, list[Path], list[FontVerdict]]:
    """Put `paths` in a fixed order (`consideration_order`), check them, and keep the first `max_fonts` that pass.

    Returns the glyph bank (F, 10, size, size), the kept paths, and a verdict for every font considered.
    `searched` (the folders `paths` came from) only serves the error message when no font is usable.
    """
    queue = consideration_order(list(paths), shuffle_seed, order)
    glyphs_of: dict[Path, np.ndarray] = {}
    verdicts: dict[Path, FontVerdict] = {}
    for p in queue:
        reason = basic_check(p, glyphs_of, size, point_size)
        if reason:
            verdicts[p] = FontVerdict(str(p), False, reason)
    candidates: list[Path] = []
    for p in (q for q in queue if q in glyphs_of):
        twin = next((q for q in candidates if np.array_equal(glyphs_of[q], glyphs_of[p])), None)
        if twin is not None:
            verdicts[p] = FontVerdict(str(p), False, f"same glyphs as {twin}")
        else:
            candidates.append(p)
    # The letter check needs other fonts to compare with; with very few it would reject good fonts.
    recognized = (
        letters_recognized(np.stack([glyphs_of[p] for p in candidates]))
        if len(candidates) >= MIN_FONTS_FOR_LETTER_CHECK
        else np.full(len(candidates), len(LETTERS))
    )
    kept: list[Path] = []
    for p, hits in zip(candidates, recognized):
        if hits < min_recognized:
            verdicts[p] = FontVerdict(str(p), False, f"only {hits}/10 glyphs look like their letter in other fonts")
        elif len(kept) >= max_fonts:
            verdicts[p] = FontVerdict(str(p), False, f"beyond max_fonts={max_fonts}")
        else:
            kept.append(p)
            verdicts[p] = FontVerdict(str(p), True)
    if not kept:
        raise RuntimeError(no_fonts_message(paths, verdicts, searched))
    bank = np.stack([glyphs_of[p] for p in kept])
    return bank, kept, [verdicts[p] for p in queue]


def no_fonts_message(paths: list[Path], verdicts: dict[Path, FontVerdict], searched: tuple[str, ...] = ()) -> str:
    """Explain that no usable font was found, where we looked, and how to add fonts."""
    where = f" in {', '.join(searched)}" if searched else ""
    looked = (f"{len(paths)} font files{where} were considered, none passed" if paths
              else f"no .ttf/.otf font files were found{where}")
    reasons = "; ".join(f"{Path(v.path).name}: {v.reason}" for v in list(verdicts.values())[:5])
    return (
        f"no usable fonts for FONTS: {looked}{' (' + reasons + ')' if reasons else ''}. "
        "Add fonts by listing folders of .ttf/.otf files under fonts.extra_dirs in the config, by installing "
        "Debian font packages (e.g. apt-get install fonts-noto-core fonts-liberation2), or by setting "
        "fonts.source: archive with fonts.archive.url pointing to a zip of fonts (e.g. Google Fonts)."
    )
