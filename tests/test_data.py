"""FONTS rendering and the HDF5 dataset layout: round trips, nested training subsets, and clear errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from manifold_robustness.data import (
    FontsSpec,
    evaluation_subset,
    make_fonts,
    read_font_list,
    read_font_set,
    read_glyph_bank,
    read_labels,
    read_ranges,
    read_split,
    split_size,
    training_subset,
    write_dataset,
    write_fonts,
)
from manifold_robustness.fonts import font_set_manifest, matplotlib_font_dir, read_manifest, sha256_of
from manifold_robustness.stages import build_fonts, write_font_list
from manifold_robustness.transformer import CODE_NAMES, PRESETS, TransformRanges, decode

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
# The fix every unreadable-file error ends with, as words (so a changed or padded wording fails).
REMAKE = r"\bdelete it and rerun the data rule$"


def assert_names_file_and_fix(message: str, path, what: str, cause: str) -> None:
    """An unreadable dataset file's error names the file, what is missing, the underlying error and the fix."""
    head = f"{path} is missing, corrupt or lacks the '{what}' split ("
    assert message.startswith(head), message
    given = message[len(head):message.rindex("); delete")]
    assert cause in given and given != "None", message
    assert re.search(REMAKE, message), message


@pytest.fixture
def dataset_file(tmp_path, fonts_data, glyph_bank):
    path = tmp_path / "data" / "fonts.h5"
    names = [str(p) for p in glyph_bank[1]]
    write_dataset(path, fonts_data, glyph_bank[0], names, attrs={"dataset": "fonts", "seed": 0})
    return path


def test_splits_have_expected_layout(fonts_data, fonts_spec, glyph_bank):
    n_fonts = len(glyph_bank[0])
    for split, per in (("train", fonts_spec.per_font_class_train), ("test", fonts_spec.per_font_class_test)):
        d = fonts_data[split]
        n = n_fonts * 10 * per
        assert d["images"].shape == (n, 1, 28, 28) and d["images"].dtype == np.float32
        assert d["images"].min() >= 0.0 and d["images"].max() <= 1.0
        assert d["labels"].shape == (n,) and d["labels"].dtype == np.int64
        assert d["codes"].shape == (n, 6) and d["codes"].dtype == np.float32
        assert d["font"].shape == (n,) and d["font"].dtype == np.int64
        # Every (font, letter) pair appears exactly `per` times.
        counts = np.zeros((n_fonts, 10), dtype=int)
        np.add.at(counts, (d["font"], d["labels"]), 1)
        assert (counts == per).all()


def test_every_font_in_both_splits(fonts_data, glyph_bank):
    train_fonts = set(fonts_data["train"]["font"].tolist())
    test_fonts = set(fonts_data["test"]["font"].tolist())
    assert train_fonts == test_fonts == set(range(len(glyph_bank[0])))


def test_codes_inside_ranges_and_images_match_decoder(fonts_data, glyph_bank, fonts_spec):
    ranges = fonts_spec.ranges
    glyphs = torch.from_numpy(glyph_bank[0])
    for split in ("train", "test"):
        d = fonts_data[split]
        codes = torch.from_numpy(d["codes"])
        assert (codes >= ranges.low).all() and (codes <= ranges.high).all()
        # Each image is the true decoder applied to its (font, label, code).
        sl = slice(0, 200)
        redone = decode(glyphs, torch.from_numpy(d["font"][sl]), torch.from_numpy(d["labels"][sl]), codes[sl])
        np.testing.assert_allclose(redone.numpy(), d["images"][sl], atol=1e-6)
    # The two splits are different samples.
    assert not np.array_equal(fonts_data["train"]["codes"][:100], fonts_data["test"]["codes"][:100])


def test_make_fonts_is_deterministic(glyph_bank):
    spec = FontsSpec(2, 1, PRESETS["hard"], seed=5)
    a, b = make_fonts(glyph_bank[0], spec), make_fonts(glyph_bank[0], spec)
    c = make_fonts(glyph_bank[0], FontsSpec(2, 1, PRESETS["hard"], seed=6))
    for split in ("train", "test"):
        for key in a[split]:
            assert np.array_equal(a[split][key], b[split][key])
    assert not np.array_equal(a["train"]["codes"], c["train"]["codes"])


@pytest.mark.parametrize("chunk", [7, 4096])
def test_written_chunk_by_chunk_the_file_holds_the_arrays_made_in_memory(tmp_path, glyph_bank, chunk):
    """`write_fonts` renders into the file a chunk at a time (7 images: chunks that straddle the file's own
    256-image chunks and the split's end); every array equals that of `make_fonts` bit for bit, and the file
    holds what `write_dataset` writes."""
    spec = FontsSpec(3, 2, PRESETS["hard"], seed=5)
    names = [str(p) for p in glyph_bank[1]]
    digests = ["x"] * len(names)
    write_fonts(tmp_path / "streamed.h5", glyph_bank[0], spec, names, {"seed": 5}, digests, chunk=chunk)
    write_dataset(tmp_path / "memory.h5", make_fonts(glyph_bank[0], spec), glyph_bank[0], names, {"seed": 5}, digests)
    with h5py.File(tmp_path / "streamed.h5") as a, h5py.File(tmp_path / "memory.h5") as b:
        keys, other = [], []
        a.visit(keys.append)
        b.visit(other.append)
        assert "train/images" in keys and keys == other and a.attrs.keys() == b.attrs.keys()
        for key in keys:
            if isinstance(a[key], h5py.Dataset):
                assert a[key].dtype == b[key].dtype and a[key].chunks == b[key].chunks, key
                assert np.array_equal(a[key][()], b[key][()]), key


def test_make_fonts_validates_ranges(glyph_bank):
    with pytest.raises(ValueError, match="shear bound"):
        make_fonts(glyph_bank[0], FontsSpec(1, 1, TransformRanges(0.1, 1.0, 0.9, 1.1, 0.5), seed=0))


def test_write_read_round_trip(dataset_file, fonts_data):
    for split in ("train", "test"):
        back = read_split(dataset_file, split)
        assert set(back) == set(fonts_data[split])
        for key, value in fonts_data[split].items():
            assert back[key].dtype == value.dtype, key
            assert back[key].shape == value.shape, key
            assert np.array_equal(back[key], value), key
        assert back["codes"].dtype == np.float32 and back["codes"].shape[1] == 6
    with h5py.File(dataset_file, "r") as h5:
        assert list(h5.attrs["code_names"]) == ["tx", "ty", "shear_x", "shear_y", "scale", "rotation"]
        assert h5.attrs["dataset"] == "fonts" and h5.attrs["seed"] == 0


def test_glyph_bank_round_trip(dataset_file, glyph_bank):
    bank, names = read_glyph_bank(dataset_file)
    assert bank.dtype == np.float32 and bank.shape == glyph_bank[0].shape
    assert np.array_equal(bank, glyph_bank[0])
    assert names == [str(p) for p in glyph_bank[1]]


@pytest.mark.parametrize("split, rows", [("train", [5, 2, 9]), ("train", [40, 3, 17, 0, 399]), ("test", [7, 1])])
def test_read_split_returns_rows_in_the_order_asked(dataset_file, fonts_data, split, rows):
    """Training reads an unsorted subset: row k of the result is the k-th row asked for, for every array."""
    back = read_split(dataset_file, split, np.array(rows))
    assert set(back) == set(fonts_data[split])
    for key, value in back.items():
        assert len(value) == len(rows), key
        for k, row in enumerate(rows):
            alone = read_split(dataset_file, split, np.array([row]))[key][0]
            assert np.array_equal(value[k], alone), (key, row)
            assert np.array_equal(value[k], fonts_data[split][key][row]), (key, row)


def test_read_ranges_reads_each_code_slot(tmp_path, fonts_data):
    """The stored bounds are per code entry in CODE_NAMES order; every field comes from its own slot."""
    translation, shear, scale_min, scale_max, rotation = 0.11, 0.37, 0.8, 1.2, 0.9  # all different
    bounds = {"tx": (-translation, translation), "ty": (-translation, translation), "shear_x": (-shear, shear),
              "shear_y": (-shear, shear), "scale": (scale_min, scale_max), "rotation": (-rotation, rotation)}
    low = np.array([bounds[name][0] for name in CODE_NAMES], dtype=np.float32)
    high = np.array([bounds[name][1] for name in CODE_NAMES], dtype=np.float32)
    path = tmp_path / "fonts.h5"
    write_dataset(path, {"test": fonts_data["test"]}, attrs={"ranges_low": low, "ranges_high": high})
    ranges = read_ranges(path)
    assert ranges.translation == pytest.approx(translation)
    assert ranges.shear == pytest.approx(shear)
    assert ranges.scale_min == pytest.approx(scale_min)
    assert ranges.scale_max == pytest.approx(scale_max)
    assert ranges.rotation == pytest.approx(rotation)
    np.testing.assert_allclose(ranges.low.numpy(), low, rtol=1e-6)
    np.testing.assert_allclose(ranges.high.numpy(), high, rtol=1e-6)
    assert ranges.convention == "placement"  # a file from before the convention was recorded


def fonts_config(**fonts) -> dict:
    """The fonts section as the workflow passes it: validated, with the schema's defaults filled in."""
    config = {"fonts": fonts}
    validate(config, str(SCHEMA))
    return config["fonts"]


def test_schema_default_geometry_is_the_papers_and_unknown_values_are_rejected():
    assert fonts_config()["geometry"] == "paper"
    with pytest.raises(WorkflowError, match=r"'inverse' is not one of \['sampling', 'placement', 'paper'\]") as info:
        fonts_config(geometry="inverse")
    assert "['fonts']['geometry']" in str(info.value)  # the message names the key


@pytest.mark.parametrize("geometry", ["sampling", "placement"])
def test_data_stage_records_the_geometry_and_renders_with_it(tmp_path, geometry):
    cfg = fonts_config(include_system=False, max_fonts=2, ranges="hard", geometry=geometry,
                       per_font_class_train=2, per_font_class_test=1)
    path = tmp_path / "fonts.h5"
    build_fonts(cfg, str(path))
    ranges = read_ranges(path)
    assert ranges.convention == geometry
    assert (ranges.scale_min, ranges.scale_max) == pytest.approx((0.75, 1.15))
    glyphs = torch.from_numpy(read_glyph_bank(path)[0])
    d = read_split(path, "train")
    args = glyphs, torch.from_numpy(d["font"]), torch.from_numpy(d["labels"]), torch.from_numpy(d["codes"])
    np.testing.assert_allclose(decode(*args, geometry).numpy(), d["images"], atol=1e-6)
    other = "placement" if geometry == "sampling" else "sampling"
    assert np.abs(decode(*args, other).numpy() - d["images"]).max() > 0.5


def test_default_fonts_are_the_pinned_set_whatever_else_the_machine_has(tmp_path):
    """The default renders from matplotlib's fonts checked by sha256; a folder of other fonts (here copies under
    new names, as a font package would add) changes no image, and the file names the set and its digest."""
    small = {"per_font_class_train": 2, "per_font_class_test": 1}
    extra = tmp_path / "more-fonts"
    extra.mkdir()
    swapped_font(matplotlib_font_dir() / "DejaVuSans.ttf", extra / "Swapped.ttf")  # a font no set lists
    shutil.copy(matplotlib_font_dir() / "cmr10.ttf", extra / "cmr10.ttf")  # a listed font, found twice
    build_fonts(fonts_config(**small), str(tmp_path / "pinned.h5"))
    build_fonts(fonts_config(**small, extra_dirs=[str(extra)]), str(tmp_path / "crowded.h5"))
    build_fonts(fonts_config(**small, source="system", include_system=False, extra_dirs=[str(extra)]),
                str(tmp_path / "system.h5"))
    for split in ("train", "test"):
        a, b = read_split(tmp_path / "pinned.h5", split), read_split(tmp_path / "crowded.h5", split)
        assert all(np.array_equal(a[k], b[k]) for k in a), split
    pinned = read_font_set(tmp_path / "pinned.h5")
    assert re.fullmatch(r"23 fonts \(pinned set matplotlib-3\.11\.2; font-set sha256 [0-9a-f]{64}\)", pinned), pinned
    assert read_font_set(tmp_path / "crowded.h5") == pinned
    system = read_font_set(tmp_path / "system.h5")  # asked for, the other font is used
    assert system.startswith("24 fonts (system fonts; font-set sha256 ") and system[-66:] != pinned[-66:]
    assert str(extra / "Swapped.ttf") in read_glyph_bank(tmp_path / "system.h5")[1]
    # The list beside the file: every kept font's sha256 and path, those of the pinned set's manifest
    write_font_list(str(tmp_path / "pinned.h5"), str(tmp_path / "pinned.sha256"))
    listed = read_manifest(tmp_path / "pinned.sha256")
    stored = read_font_list(tmp_path / "pinned.h5")
    assert len(listed) == 23 and sorted(listed) == sorted((d, Path(n).name) for d, n in stored)
    assert {d for d, _ in listed} <= {d for d, _ in read_manifest(font_set_manifest("matplotlib-3.11.2"))}
    assert all(sha256_of(n) == d for d, n in stored)


def test_a_font_list_from_a_file_without_digests(tmp_path):
    """Files written before the digests were stored: the list hashes the font files where they are; where one is
    gone, the error says so and how to remake the file."""
    bank = np.zeros((2, 10, 28, 28), np.float32)
    here, gone = matplotlib_font_dir() / "DejaVuSans.ttf", tmp_path / "Gone.ttf"
    splits = {"train": {"labels": np.zeros(1, np.int64)}}
    write_dataset(tmp_path / "old.h5", splits, bank[:1], [str(here)])
    assert read_font_list(tmp_path / "old.h5") == [(sha256_of(here), str(here))]
    write_dataset(tmp_path / "moved.h5", splits, bank, [str(here), str(gone)])
    with pytest.raises(RuntimeError, match=r"stores no font digests and 1 of its font files are gone \(first: "
                                           r".*Gone\.ttf\); delete it and rerun the fonts_data rule"):
        read_font_list(tmp_path / "moved.h5")


def swapped_font(source: Path, out: Path) -> None:
    """A copy of `source` whose A and B are swapped in the character map: another font, as far as glyphs go."""
    from fontTools.ttLib import TTFont

    with TTFont(str(source)) as tt:
        maps = {id(t.cmap): t.cmap for t in tt["cmap"].tables if 0x41 in t.cmap and 0x42 in t.cmap}
        for cmap in maps.values():  # subtables may share one mapping: swap each mapping once
            cmap[0x41], cmap[0x42] = cmap[0x42], cmap[0x41]
        tt.save(str(out))


def test_read_ranges_rejects_an_unknown_geometry(tmp_path, fonts_data):
    path = tmp_path / "fonts.h5"
    write_dataset(path, {"test": fonts_data["test"]}, attrs={
        "ranges_low": PRESETS["hard"].low.numpy(), "ranges_high": PRESETS["hard"].high.numpy(), "geometry": "inverse"})
    with pytest.raises(RuntimeError, match="code convention 'inverse'") as info:
        read_ranges(path)
    assert re.search(REMAKE, str(info.value)), str(info.value)


def test_read_split_rejects_unknown_split(dataset_file):
    with pytest.raises(ValueError, match="split must be one of"):
        read_split(dataset_file, "validation")


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.95])
def test_read_split_on_truncated_file(dataset_file, fraction):
    data = dataset_file.read_bytes()
    dataset_file.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(RuntimeError, match="delete it and rerun") as info:
        read_split(dataset_file, "train")
    assert str(dataset_file) in str(info.value)


def test_read_split_on_garbage_and_missing_file(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(RuntimeError, match="delete it and rerun"):
        read_split(garbage, "test")
    with pytest.raises(RuntimeError, match="delete it and rerun"):
        read_split(tmp_path / "absent.h5", "test")


def test_read_split_on_missing_split(tmp_path, fonts_data):
    path = tmp_path / "only_train.h5"
    write_dataset(path, {"train": fonts_data["train"]})
    assert len(read_split(path, "train")["labels"]) == len(fonts_data["train"]["labels"])
    for read in (read_split, read_labels, split_size):
        with pytest.raises(RuntimeError) as info:
            read(path, "test")
        assert_names_file_and_fix(str(info.value), path, "test", "'test'")


def test_labels_and_size_read_without_the_images(dataset_file, fonts_data):
    for split, arrays in fonts_data.items():
        np.testing.assert_array_equal(read_labels(dataset_file, split), arrays["labels"])
        assert split_size(dataset_file, split) == len(arrays["labels"])
    with pytest.raises(RuntimeError) as info:
        split_size(dataset_file.parent / "absent.h5", "train")
    assert_names_file_and_fix(str(info.value), dataset_file.parent / "absent.h5", "train", "absent.h5")


def test_read_ranges_names_the_file_when_its_bounds_are_missing(tmp_path, fonts_data):
    path = tmp_path / "no_ranges.h5"
    write_dataset(path, {"test": fonts_data["test"]})
    with pytest.raises(RuntimeError) as info:
        read_ranges(path)
    assert_names_file_and_fix(str(info.value), path, "attrs", "'ranges_low'")


def test_read_split_rejects_wrong_image_shape(tmp_path):
    path = tmp_path / "bad.h5"
    write_dataset(path, {"train": {"images": np.zeros((4, 1, 14, 14), np.float32), "labels": np.zeros(4, np.int64)}})
    with pytest.raises(RuntimeError, match="does not hold images"):
        read_split(path, "train")


@pytest.mark.parametrize("arrays", [
    {"images": np.zeros((4, 1, 28, 28), np.float32)},  # no labels
    {"labels": np.zeros(4, np.int64)},  # no images
    {"images": np.zeros((4, 1, 28, 28), np.float32), "labels": np.zeros(3, np.int64)},  # counts differ
    {"images": np.zeros((4, 28, 28), np.float32), "labels": np.zeros(4, np.int64)},  # no channel axis
], ids=["no-labels", "no-images", "count-mismatch", "three-axes"])
def test_read_split_rejects_a_split_without_matching_images_and_labels(tmp_path, arrays):
    path = tmp_path / "bad.h5"
    write_dataset(path, {"train": arrays})
    with pytest.raises(RuntimeError, match=r"bad.h5:train does not hold images \(n,1,28,28\) with matching labels"):
        read_split(path, "train")


def test_write_dataset_is_atomic_on_failure(tmp_path, fonts_data):
    path = tmp_path / "fonts.h5"
    with pytest.raises(AttributeError):
        write_dataset(path, {"train": {"images": fonts_data["train"]["images"], "labels": object()}})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_training_subset_is_nested_and_deterministic():
    small = training_subset(3200, 100, subset_seed=7)
    big = training_subset(3200, 1000, subset_seed=7)
    assert np.array_equal(big[:100], small)
    assert np.array_equal(training_subset(3200, 1000, subset_seed=7), big)
    assert len(np.unique(big)) == 1000 and big.min() >= 0 and big.max() < 3200
    assert not np.array_equal(training_subset(3200, 1000, subset_seed=8), big)
    assert np.array_equal(np.sort(training_subset(50, 50, 0)), np.arange(50))


@pytest.mark.parametrize("n_train", [3201, 10_000, 0, -1])
def test_training_subset_rejects_impossible_n(n_train):
    with pytest.raises(ValueError, match=rf"N={n_train} training images requested .* holds 3200; lower "
                                         r"classifiers\.n_train in the config or render more images per font$"):
        training_subset(3200, n_train, subset_seed=0)


@pytest.mark.parametrize("n_train", [1, 3200])
def test_training_subset_accepts_the_bounds(n_train):
    assert len(np.unique(training_subset(3200, n_train, subset_seed=0))) == n_train


def test_evaluation_subset_sorted_deterministic_and_capped():
    a = evaluation_subset(800, 100, seed=1)
    assert np.array_equal(a, evaluation_subset(800, 100, seed=1))
    assert np.array_equal(a, np.sort(a)) and len(np.unique(a)) == 100
    assert np.array_equal(evaluation_subset(30, 100, seed=1), np.arange(30))
