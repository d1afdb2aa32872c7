"""Font discovery, the glyph bank's checks and verdicts, and the pinned font archive (offline, file:// URLs)."""

from __future__ import annotations

import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from manifold_robustness.fonts import (
    build_glyph_bank,
    consideration_order,
    discover_font_files,
    extract_fonts,
    fetch_archive,
    font_set_digest,
    font_set_manifest,
    matplotlib_font_dir,
    not_letters,
    pinned_font_files,
    read_manifest,
    render_letters,
    sha256_of,
)

DEJAVU = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")


@pytest.fixture(scope="module")
def dejavu_paths():
    paths = [matplotlib_font_dir() / name for name in DEJAVU]
    for p in paths:
        assert p.is_file(), p
    return paths


@pytest.fixture
def font_zip(tmp_path, dejavu_paths):
    """A zip holding three fonts (in a subfolder) and a non-font file that must not be extracted."""
    path = tmp_path / "src" / "fonts.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for p in dejavu_paths:
            zf.write(p, f"family/{p.name}")
        zf.writestr("family/README.txt", "not a font")
    return path


def verdict_of(verdicts, path: Path):
    (v,) = [v for v in verdicts if v.path == str(path)]
    return v


def test_discover_font_files_sorted_and_deduplicated(tmp_path, dejavu_paths):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(dejavu_paths[0], tmp_path / "b" / "Zeta.TTF")
    shutil.copy(dejavu_paths[1], tmp_path / "a" / "alpha.otf")
    (tmp_path / "a" / "notes.txt").write_text("x")
    found = discover_font_files([tmp_path, tmp_path / "a", tmp_path / "missing"])
    assert [p.name for p in found] == ["alpha.otf", "Zeta.TTF"]
    assert discover_font_files([tmp_path / "missing"]) == []


def test_glyph_bank_fixture(glyph_bank):
    bank, kept, verdicts = glyph_bank
    assert bank.dtype == np.float32 and bank.min() >= 0 and bank.max() <= 1
    assert len(kept) == len(bank) == len(set(kept))
    assert sum(v.kept for v in verdicts) == len(kept)
    assert all(v.reason for v in verdicts if not v.kept)
    # No two kept fonts are identical and no two letters of a font are identical.
    flat = bank.reshape(len(bank), -1)
    assert len({row.tobytes() for row in flat}) == len(bank)
    for glyphs in bank:
        assert len({g.tobytes() for g in glyphs}) == 10


def test_glyph_bank_is_deterministic(font_paths, glyph_bank):
    bank, kept, _ = build_glyph_bank(font_paths, max_fonts=8, shuffle_seed=0)
    assert kept == glyph_bank[1] and np.array_equal(bank, glyph_bank[0])
    _, kept_other, _ = build_glyph_bank(font_paths, max_fonts=8, shuffle_seed=1)
    assert kept_other != kept


def test_render_letters_centres_glyphs(dejavu_paths):
    glyphs = render_letters(dejavu_paths[0])
    assert glyphs.shape == (10, 28, 28) and glyphs.dtype == np.float32
    assert glyphs.min() >= 0 and glyphs.max() <= 1
    rows = np.arange(28)
    for g in glyphs:
        ink = g > 0.5
        cy = (rows[:, None] * g).sum() / g.sum()
        cx = (rows[None, :] * g).sum() / g.sum()
        assert ink.sum() > 5 and abs(cy - 13.5) < 3 and abs(cx - 13.5) < 3


def test_garbage_font_is_dropped_with_reason(tmp_path, font_paths):
    fake = tmp_path / "fake.ttf"
    fake.write_bytes(np.random.default_rng(0).bytes(2048))
    bank, kept, verdicts = build_glyph_bank(list(font_paths) + [fake], max_fonts=8, shuffle_seed=0)
    v = verdict_of(verdicts, fake)
    assert not v.kept and v.reason.startswith("cannot render"), v.reason
    assert fake not in kept and len(kept) == 8
    assert len(verdicts) == len(font_paths) + 1


def test_duplicate_font_is_dropped_with_reason(tmp_path, font_paths, dejavu_paths):
    original = dejavu_paths[0]
    copy = tmp_path / "CopyOfDejaVu.ttf"
    shutil.copy(original, copy)
    paths = list(font_paths) + [copy]
    _, kept, verdicts = build_glyph_bank(paths, max_fonts=len(paths), shuffle_seed=0)
    pair = [verdict_of(verdicts, original), verdict_of(verdicts, copy)]
    dropped = [v for v in pair if v.reason.startswith("same glyphs as")]
    assert len(dropped) == 1, pair
    other = pair[1 - pair.index(dropped[0])]
    assert other.kept and dropped[0].reason == f"same glyphs as {other.path}"
    assert not (original in kept and copy in kept)


def test_max_fonts_limits_the_bank(font_paths):
    bank, kept, verdicts = build_glyph_bank(font_paths, max_fonts=3, shuffle_seed=0)
    assert len(kept) == 3 and bank.shape == (3, 10, 28, 28)
    assert any(v.reason == "beyond max_fonts=3" for v in verdicts)


def test_no_fonts_raises_with_help():
    with pytest.raises(RuntimeError, match="no .ttf/.otf font files were found") as info:
        build_glyph_bank([], max_fonts=8, shuffle_seed=0)
    assert "extra_dirs" in str(info.value)


def test_no_fonts_message_names_the_folders_searched(tmp_path):
    folder = str(tmp_path / "my-fonts")
    with pytest.raises(RuntimeError, match=re.escape(f"no .ttf/.otf font files were found in {folder}")) as info:
        build_glyph_bank(discover_font_files([folder]), max_fonts=8, shuffle_seed=0, searched=(folder,))
    assert "fonts.extra_dirs" in str(info.value)


def test_only_unusable_fonts_raise_with_reasons(tmp_path):
    fake = tmp_path / "fake.ttf"
    fake.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(RuntimeError, match="1 font files were considered") as info:
        build_glyph_bank([fake], max_fonts=8, shuffle_seed=0)
    msg = str(info.value)
    assert "fake.ttf: cannot render" in msg and "extra_dirs" in msg


def test_fetch_and_extract_with_correct_sha256(tmp_path, font_zip, dejavu_paths):
    digest = sha256_of(font_zip)
    dest = tmp_path / "cache" / "fonts.zip"
    assert fetch_archive(font_zip.as_uri(), dest, sha256=digest) == digest
    assert dest.read_bytes() == font_zip.read_bytes()
    assert not any(p.name.endswith(".download") for p in dest.parent.iterdir())
    out = tmp_path / "extracted"
    files = extract_fonts(dest, out)
    assert sorted(p.name for p in files) == sorted(DEJAVU)
    assert all(p.is_file() and out in p.parents for p in files)
    assert not list(out.rglob("*.txt"))
    for f in files:
        assert f.read_bytes() == (matplotlib_font_dir() / f.name).read_bytes()
    # Fonts from the archive are usable.
    _, kept, _ = build_glyph_bank(files, max_fonts=3, shuffle_seed=0)
    assert len(kept) == 3


def test_existing_archive_is_used_without_download(tmp_path, font_zip):
    dest = tmp_path / "fonts.zip"
    shutil.copy(font_zip, dest)
    digest = fetch_archive("file:///nonexistent/x.zip", dest, sha256=sha256_of(font_zip))
    assert digest == sha256_of(font_zip)


def test_wrong_sha256_moves_archive_aside(tmp_path, font_zip):
    dest = tmp_path / "cache" / "fonts.zip"
    with pytest.raises(RuntimeError, match="expected 0{64}") as info:
        fetch_archive(font_zip.as_uri(), dest, sha256="0" * 64)
    bad = dest.with_name("fonts.zip.bad")
    assert str(bad) in str(info.value)
    assert not dest.exists()
    assert bad.read_bytes() == font_zip.read_bytes()


def test_empty_sha256_is_recorded_then_enforced(tmp_path, font_zip):
    dest = tmp_path / "cache" / "fonts.zip"
    digest = fetch_archive(font_zip.as_uri(), dest, sha256="")
    record = dest.with_name("fonts.zip.sha256")
    assert record.read_text().strip() == digest == sha256_of(font_zip)
    # Unchanged file: accepted again.
    assert fetch_archive(font_zip.as_uri(), dest, sha256="") == digest
    # Tampered file: rejected against the record, and moved aside.
    dest.write_bytes(dest.read_bytes() + b"tampered")
    with pytest.raises(RuntimeError, match=f"expected {digest}"):
        fetch_archive(font_zip.as_uri(), dest, sha256="")
    assert not dest.exists() and dest.with_name("fonts.zip.bad").exists()


def test_unreachable_url_names_where_to_put_the_file(tmp_path):
    dest = tmp_path / "cache" / "fonts.zip"
    with pytest.raises(RuntimeError, match="could not download") as info:
        fetch_archive("file:///nonexistent/x.zip", dest, sha256="")
    assert f"put it at {dest}" in str(info.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no partial download, no checksum record


def test_extract_from_tar(tmp_path, dejavu_paths):
    archive = tmp_path / "fonts.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for p in dejavu_paths[:2]:
            tf.add(p, arcname=f"fonts/{p.name}")
    files = extract_fonts(archive, tmp_path / "out")
    assert sorted(p.name for p in files) == sorted(DEJAVU[:2])


def test_extract_replaces_previous_contents(tmp_path, font_zip):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.ttf").write_bytes(b"old")
    files = extract_fonts(font_zip, out)
    assert "stale.ttf" not in {p.name for p in files}
    assert not (out / "stale.ttf").exists()


def test_extract_rejects_non_archive(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"plain bytes, not an archive")
    with pytest.raises(RuntimeError, match=re.escape("neither a zip nor a tar archive")):
        extract_fonts(junk, tmp_path / "out")


def write_manifest(path: Path, files: list[Path]) -> Path:
    path.write_text("".join(f"{sha256_of(p)}  {p.name}\n" for p in files))
    return path


def test_bundled_font_set_is_what_the_pinned_matplotlib_ships():
    """Every file of the bundled set is found in matplotlib's folder with its listed sha256, and the set is all
    of that folder's fonts: a matplotlib that ships other files fails here, not in the middle of a run."""
    manifest = font_set_manifest("matplotlib-3.11.2")
    files = pinned_font_files(manifest, [matplotlib_font_dir()])
    assert [p.name for p in files] == [name for _, name in read_manifest(manifest)]
    assert len(files) == 40 and {p.name for p in files} == {p.name for p in discover_font_files([matplotlib_font_dir()])}
    assert all(sha256_of(p) == d for p, (d, _) in zip(files, read_manifest(manifest)))


def test_pinned_set_ignores_other_fonts_and_other_folders(tmp_path, dejavu_paths):
    """Extra fonts elsewhere (another name, or a second copy) change nothing: the same files, in the same order,
    give the same glyph bank."""
    manifest = write_manifest(tmp_path / "set.sha256", dejavu_paths)
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(matplotlib_font_dir() / "DejaVuSans-Bold.ttf", extra / "AAA-Other.ttf")  # not listed
    shutil.copy(dejavu_paths[0], extra / dejavu_paths[0].name)  # a listed file twice
    alone = pinned_font_files(manifest, [matplotlib_font_dir()])
    crowded = pinned_font_files(manifest, [extra, matplotlib_font_dir()])
    assert [p.name for p in crowded] == sorted((p.name for p in dejavu_paths), key=str.lower)
    assert [sha256_of(p) for p in crowded] == [sha256_of(p) for p in alone]
    bank_alone, _, _ = build_glyph_bank(alone, 10, 0)
    bank_crowded, _, _ = build_glyph_bank(crowded, 10, 0)
    np.testing.assert_array_equal(bank_alone, bank_crowded)


def test_pinned_set_refuses_a_missing_or_changed_font(tmp_path, dejavu_paths):
    manifest = write_manifest(tmp_path / "set.sha256", dejavu_paths)
    here = tmp_path / "fonts"
    here.mkdir()
    shutil.copy(dejavu_paths[0], here / dejavu_paths[0].name)
    with pytest.raises(RuntimeError, match=r"DejaVuSansMono.ttf was not found.*fonts.source: system"):
        pinned_font_files(manifest, [here])
    for p in dejavu_paths[1:]:
        shutil.copy(p, here / p.name)
    (here / "DejaVuSerif.ttf").write_bytes((here / "DejaVuSerif.ttf").read_bytes() + b"x")
    with pytest.raises(RuntimeError, match=r"DejaVuSerif.ttf is at .* but its content differs"):
        pinned_font_files(manifest, [here])


def test_font_set_names_and_manifests_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"neither a bundled font set \(matplotlib-3.11.2\)"):
        font_set_manifest("no-such-set")
    bad = tmp_path / "bad.sha256"
    bad.write_text("1234  DejaVuSans.ttf\n")
    with pytest.raises(ValueError, match=r"bad.sha256, line 1: expected '<sha256 in hex>  <font file name>'"):
        read_manifest(bad)
    bad.write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no fonts"):
        read_manifest(bad)


def test_font_set_digest_depends_on_the_files_not_their_order():
    a, b, c = ("0" * 64, "1" * 64, "2" * 64)
    assert font_set_digest([a, b]) == font_set_digest([b, a])
    assert font_set_digest([a, b]) != font_set_digest([a, c])
    assert font_set_digest([a]) != font_set_digest([a, b])


def test_letter_check_in_blocks_equals_the_whole_matrix_and_recognizes_letters() -> None:
    """The nearest-glyph search computed a block of rows at a time (memory growing with the fonts, not their square)
    gives what the whole correlation matrix gives; fonts drawn around ten letter templates are recognized, a font
    of noise is not."""
    from manifold_robustness.fonts import letters_recognized

    rng = np.random.default_rng(0)
    templates = rng.random((10, 28, 28))
    banks = templates[None] + 0.05 * rng.random((12, 10, 28, 28))
    banks[5] = rng.random((10, 28, 28))  # a font of noise, like no letter
    whole = letters_recognized(banks, rows_per_block=len(banks) * 10)
    assert whole[5] < 8 and whole.tolist()[:5] + whole.tolist()[6:] == [10] * 11
    for block in (1, 7, 33):
        assert letters_recognized(banks, rows_per_block=block).tolist() == whole.tolist()


def renamed_font(source: Path, dest: Path, family: str, symbol_cmap: bool = False) -> Path:
    """A copy of `source` under another family name and, if asked, with a Microsoft Symbol character map added
    (symbol fonts carry one: their codes stand for pictures)."""
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.tables._c_m_a_p import CmapSubtable

    with TTFont(str(source)) as tt:
        for record in tt["name"].names:
            if record.nameID in (1, 4, 16):
                record.string = family
        if symbol_cmap:
            table = CmapSubtable.newSubtable(4)
            table.platformID, table.platEncID, table.language = 3, 0, 0
            table.cmap = {0xF000 + code: name for code, name in tt.getBestCmap().items() if code < 0x80}
            tt["cmap"].tables.append(table)
        tt.save(str(dest))
    return dest


def test_barcode_and_symbol_fonts_are_dropped_with_reason(tmp_path, font_paths, dejavu_paths):
    """A barcode font (by its family name) and a symbol font (by its character map) draw no letters: both are
    dropped, saying which; an ordinary font, renamed, is kept."""
    barcode = renamed_font(dejavu_paths[0], tmp_path / "LibreBarcode39-Regular.ttf", "Libre Barcode 39")
    symbol = renamed_font(dejavu_paths[1], tmp_path / "Symbols.ttf", "Some Symbols", symbol_cmap=True)
    plain = renamed_font(dejavu_paths[2], tmp_path / "Plain.ttf", "Plain Mono")
    assert not_letters(barcode) == "a barcode font (family 'Libre Barcode 39')"
    assert not_letters(symbol) == "a symbol font (Microsoft Symbol character map)"
    assert not_letters(plain) == "" and all(not_letters(p) == "" for p in font_paths)
    others = [p for p in font_paths if p.name not in DEJAVU]
    _, kept, verdicts = build_glyph_bank(others + [barcode, symbol, plain], max_fonts=100, shuffle_seed=0)
    assert verdict_of(verdicts, barcode).reason == "a barcode font (family 'Libre Barcode 39')"
    assert verdict_of(verdicts, symbol).reason.startswith("a symbol font")
    assert plain in kept and barcode not in kept and symbol not in kept


def test_content_order_does_not_change_when_unrelated_files_are_added(tmp_path, font_paths):
    """By content, a font's place among the others depends on its own bytes: adding files or moving the fonts
    elsewhere leaves the order of the rest as it was; the seed changes it. A seeded shuffle of the whole list
    reorders the rest when one file is added."""
    before = consideration_order(list(font_paths), 0, "content")
    extra = tmp_path / "extra.ttf"
    extra.write_bytes(b"not really a font")
    after = consideration_order(list(font_paths) + [extra], 0, "content")
    assert [p for p in after if p != extra] == before
    moved = []
    for i, p in enumerate(font_paths):
        moved.append(tmp_path / f"{i}" / p.name)
        moved[-1].parent.mkdir()
        shutil.copy(p, moved[-1])
    assert [p.name for p in consideration_order(moved[::-1], 0, "content")] == [p.name for p in before]
    assert consideration_order(list(font_paths), 1, "content") != before
    shuffled = consideration_order(list(font_paths), 0, "shuffle")
    assert [p for p in consideration_order(list(font_paths) + [extra], 0, "shuffle") if p != extra] != shuffled
    with pytest.raises(ValueError, match="unknown font order 'random'; use one of"):
        consideration_order(list(font_paths), 0, "random")
