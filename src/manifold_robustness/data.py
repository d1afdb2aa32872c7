"""Dataset files: building FONTS from a glyph bank, and reading/writing the HDF5 layout every stage shares.

Layout of `results/data/{dataset}.h5`: groups `train` and `test`, each with `images` float32 (n,1,28,28) in
[0,1] and `labels` int64 (n,); FONTS adds `codes` float32 (n,6) and `font` int64 (n,), a group `glyphs`
with the bank (F,10,28,28) and the font file names it came from, and file attributes `ranges_low`,
`ranges_high` (the code box) and `geometry` (the code convention of `transformer`, placement or sampling).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .io import atomic_path, h5_cause
from .transformer import CODE_NAMES, CONVENTIONS, TransformRanges, decode, sample_codes

SPLITS = ("train", "test")
RENDER_CHUNK = 4096  # images rendered (and held) at a time


@dataclass(frozen=True)
class FontsSpec:
    """How many images per (font, letter) and split, the code ranges, and the seed of the sampling."""

    per_font_class_train: int
    per_font_class_test: int
    ranges: TransformRanges
    seed: int


def split_codes(glyphs: torch.Tensor, per_font_class: int, ranges: TransformRanges,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Font, letter and uniformly sampled code of `per_font_class` images of every (font, letter)."""
    n_fonts, n_classes = glyphs.shape[:2]
    font = torch.arange(n_fonts).repeat_interleave(n_classes * per_font_class)
    label = torch.arange(n_classes).repeat_interleave(per_font_class).repeat(n_fonts)
    return font, label, sample_codes(len(font), ranges, generator)


def render_chunks(glyphs: torch.Tensor, font: torch.Tensor, label: torch.Tensor, codes: torch.Tensor,
                  convention: str, chunk: int = RENDER_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """The images of `codes`, `chunk` at a time: (first row, float32 images in [0, 1])."""
    for i in range(0, len(font), chunk):
        images = decode(glyphs, font[i:i + chunk], label[i:i + chunk], codes[i:i + chunk], convention)
        yield i, images.clamp(0, 1).numpy().astype(np.float32)


def split_arrays(font: torch.Tensor, label: torch.Tensor, codes: torch.Tensor) -> dict[str, np.ndarray]:
    """A split's arrays besides its images, as stored."""
    return {"labels": label.numpy().astype(np.int64), "codes": codes.numpy().astype(np.float32),
            "font": font.numpy().astype(np.int64)}


def split_draws(glyphs: torch.Tensor, spec: FontsSpec) -> Iterator[tuple[str, torch.Tensor, torch.Tensor,
                                                                        torch.Tensor]]:
    """Each split's font, letter and code, drawn in split order from the spec's one generator: what both ways of
    rendering FONTS (`make_fonts`, `write_fonts`) render, so they give the same images."""
    spec.ranges.validate()
    generator = torch.Generator().manual_seed(spec.seed)
    for split, per_font_class in (("train", spec.per_font_class_train), ("test", spec.per_font_class_test)):
        yield split, *split_codes(glyphs, per_font_class, spec.ranges, generator)


def make_fonts(glyph_bank: np.ndarray, spec: FontsSpec) -> dict[str, dict[str, np.ndarray]]:
    """Both FONTS splits from one glyph bank, in memory; the split is by transformation sample, so every font is
    in both. `write_fonts` writes the same arrays without holding them."""
    glyphs = torch.from_numpy(glyph_bank).float()
    splits = {}
    with torch.no_grad():
        for split, font, label, codes in split_draws(glyphs, spec):
            blocks = [block for _, block in render_chunks(glyphs, font, label, codes, spec.ranges.convention)]
            splits[split] = {"images": np.concatenate(blocks), **split_arrays(font, label, codes)}
    return splits


def _create(group: h5py.Group, key: str, value: np.ndarray | None = None, shape: tuple | None = None):
    """A split's array as every dataset file stores it: images chunked per 256 examples, all gzip-compressed."""
    shape = value.shape if value is not None else shape
    chunks = (min(256, shape[0]), *shape[1:]) if len(shape) > 1 else None
    return group.create_dataset(key, data=value, shape=None if value is not None else shape,
                                dtype=None if value is not None else np.float32, chunks=chunks,
                                compression="gzip", compression_opts=1)


def _finish(h5: h5py.File, glyph_bank: np.ndarray | None, font_names: list[str] | None, attrs: dict | None,
            font_sha256: list[str] | None) -> None:
    """The glyph bank, its fonts and the file's attributes."""
    if glyph_bank is not None:
        g = h5.create_group("glyphs")
        g.create_dataset("images", data=glyph_bank.astype(np.float32))
        g.create_dataset("font_names", data=np.array(font_names or [], dtype=h5py.string_dtype()))
        if font_sha256 is not None:
            g.create_dataset("font_sha256", data=np.array(font_sha256, dtype=h5py.string_dtype()))
    h5.attrs["code_names"] = list(CODE_NAMES)
    for key, value in (attrs or {}).items():
        h5.attrs[key] = value


def write_dataset(path: str | os.PathLike, splits: dict[str, dict[str, np.ndarray]],
                  glyph_bank: np.ndarray | None = None, font_names: list[str] | None = None,
                  attrs: dict | None = None, font_sha256: list[str] | None = None) -> None:
    """Write the dataset file atomically; images are chunked per example and compressed."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for split, arrays in splits.items():
            group = h5.create_group(split)
            for key, value in arrays.items():
                _create(group, key, value)
        _finish(h5, glyph_bank, font_names, attrs, font_sha256)


def write_fonts(path: str | os.PathLike, glyph_bank: np.ndarray, spec: FontsSpec, font_names: list[str],
                attrs: dict | None = None, font_sha256: list[str] | None = None,
                chunk: int = RENDER_CHUNK) -> None:
    """Render both FONTS splits straight into the dataset file, `chunk` images at a time: the same arrays as
    `make_fonts` + `write_dataset`, with memory that grows with the chunk, not with the number of images (the
    paper's 960k training images are 2.8 GiB)."""
    glyphs = torch.from_numpy(glyph_bank).float()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5, torch.no_grad():
        for split, font, label, codes in split_draws(glyphs, spec):
            group = h5.create_group(split)
            images = _create(group, "images", shape=(len(font), 1, *glyph_bank.shape[-2:]))
            for start, block in render_chunks(glyphs, font, label, codes, spec.ranges.convention, chunk):
                images[start:start + len(block)] = block
            for key, value in split_arrays(font, label, codes).items():
                _create(group, key, value)
        _finish(h5, glyph_bank, font_names, attrs, font_sha256)


def incomplete_file(path: str | os.PathLike, split: str, err: Exception) -> RuntimeError:
    """The error for a dataset file that cannot be read: name it and say how to remake it."""
    cause = h5_cause(err)
    if cause:
        return RuntimeError(f"{path} could not be opened ({err}){cause}")
    return RuntimeError(f"{path} is missing, corrupt or lacks the '{split}' split ({err}); delete it and rerun "
                        "the data rule")


def read_split(path: str | os.PathLike, split: str, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Read one split (or only `rows` of it, in the given order) as numpy arrays.

    Reading rows avoids loading the paper's 960k training images to train on N of them. A file that is not a
    complete dataset file raises an error naming it and the fix.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    try:
        with h5py.File(path, "r") as h5:
            if split not in h5:
                raise KeyError(split)
            group = h5[split]
            if rows is None:
                data = {key: group[key][()] for key in group}
            else:
                order = np.argsort(rows)
                increasing = np.asarray(rows)[order]  # h5py reads rows in increasing order only
                data = {}
                for key in group:
                    part = group[key][increasing]
                    data[key] = np.empty_like(part)
                    data[key][order] = part
    except (OSError, KeyError) as err:
        raise incomplete_file(path, split, err) from err
    images, labels = data.get("images"), data.get("labels")
    if images is None or labels is None or images.ndim != 4 or images.shape[1:] != (1, 28, 28) \
            or len(images) != len(labels):
        raise RuntimeError(f"{path}:{split} does not hold images (n,1,28,28) with matching labels; delete and rerun")
    return data


def read_labels(path: str | os.PathLike, split: str) -> np.ndarray:
    """Labels of a split, without reading the images."""
    try:
        with h5py.File(path, "r") as h5:
            return h5[split]["labels"][()]
    except (OSError, KeyError) as err:
        raise incomplete_file(path, split, err) from err


def split_size(path: str | os.PathLike, split: str) -> int:
    """Number of examples in a split, without reading them."""
    try:
        with h5py.File(path, "r") as h5:
            return int(h5[split]["labels"].shape[0])
    except (OSError, KeyError) as err:
        raise incomplete_file(path, split, err) from err


def read_glyph_bank(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """The FONTS glyph bank (F,10,28,28) and the font file names, for the true decoder."""
    with h5py.File(path, "r") as h5:
        return h5["glyphs/images"][()], list(h5["glyphs/font_names"].asstr()[()])


def read_font_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(sha256, font file) of every font of the FONTS file, in the glyph bank's order. Files written before the
    digests were stored give the digests of the font files where they still are on this machine."""
    from .fonts import sha256_of

    with h5py.File(path, "r") as h5:
        names = list(h5["glyphs/font_names"].asstr()[()])
        if "glyphs/font_sha256" in h5:
            return list(zip(h5["glyphs/font_sha256"].asstr()[()], names))
    missing = [n for n in names if not Path(n).is_file()]
    if missing:
        raise RuntimeError(f"{path} stores no font digests and {len(missing)} of its font files are gone (first: "
                           f"{missing[0]}); delete it and rerun the fonts_data rule, which stores them")
    return [(sha256_of(n), n) for n in names]


def read_font_set(path: str | os.PathLike) -> str:
    """How the FONTS file names its fonts: their count, the set they came from and the set's sha256 (files
    written before the set was recorded give the count alone)."""
    with h5py.File(path, "r") as h5:
        n, attrs = len(h5["glyphs/font_names"]), h5.attrs
        if "font_set_sha256" not in attrs:
            return f"{n} fonts"
        return f"{n} fonts ({attrs['font_set']}; font-set sha256 {attrs['font_set_sha256']})"


def read_ranges(path: str | os.PathLike) -> TransformRanges:
    """The box FONTS codes were sampled from (the true manifold's domain) and the convention they were rendered
    with, as stored in the dataset file."""
    try:
        with h5py.File(path, "r") as h5:
            low, high = np.asarray(h5.attrs["ranges_low"]), np.asarray(h5.attrs["ranges_high"])
            # Files written before the convention was recorded were all rendered as placements.
            geometry = str(h5.attrs.get("geometry", "placement"))  # h5py reads string attributes as str
    except (OSError, KeyError) as err:
        raise incomplete_file(path, "attrs", err) from err
    if geometry not in CONVENTIONS:
        raise RuntimeError(f"{path} records the code convention '{geometry}', not one of {CONVENTIONS}; "
                           "delete it and rerun the data rule")
    return TransformRanges(translation=float(high[0]), shear=float(high[2]), scale_min=float(low[4]),
                           scale_max=float(high[4]), rotation=float(high[5]), convention=geometry)


def training_subset(n_available: int, n_train: int, subset_seed: int) -> np.ndarray:
    """Indices of the first `n_train` images of one fixed permutation, so subsets for growing N are nested."""
    if not 0 < n_train <= n_available:
        raise ValueError(f"N={n_train} training images requested but the training set holds {n_available}; "
                         "lower classifiers.n_train in the config or render more images per font")
    perm = torch.randperm(n_available, generator=torch.Generator().manual_seed(subset_seed))
    return perm[:n_train].numpy()


def evaluation_subset(n_available: int, n_eval: int, seed: int) -> np.ndarray:
    """Indices of the test images that every model is attacked on (the same for all models), sorted."""
    n_eval = min(n_eval, n_available)
    perm = torch.randperm(n_available, generator=torch.Generator().manual_seed(seed))
    return np.sort(perm[:n_eval].numpy())
