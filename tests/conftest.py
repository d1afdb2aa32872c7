"""Shared fixtures: a small glyph bank from matplotlib's bundled fonts, a tiny FONTS dataset rendered from it,
and a small classifier trained on it (the model the attack tests attack).

Everything is seeded and session-scoped, so the whole suite builds them once (about two seconds on 2 cores).
Tests must not mutate the shared model in place (use copy.deepcopy before .double(), training, ...).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from manifold_robustness.data import FontsSpec, make_fonts
from manifold_robustness.fonts import build_glyph_bank, default_font_dirs, discover_font_files
from manifold_robustness.training import TrainConfig, train_classifier
from manifold_robustness.transformer import PRESETS

# Two threads, as on the 2-core machines the suite is sized for; mutation testing (scripts/mutation.py) runs its
# forked workers with one each, since torch's thread pool does not survive a fork.
torch.set_num_threads(int(os.environ.get("MANIFOLD_ROBUSTNESS_TEST_THREADS", "2")))

N_FONTS = 8
PER_FONT_CLASS_TRAIN = 40
PER_FONT_CLASS_TEST = 10


def pytest_collection_modifyitems(config, items):
    """Under mutation testing (scripts/mutation.py), run a mutant's tests fastest first, by the durations mutmut
    measured on the unmutated code, so that the quickest test able to kill it runs before the slow ones."""
    stats = Path("mutmut-stats.json")
    if os.environ.get("MUTANT_UNDER_TEST") and stats.exists():
        durations = json.loads(stats.read_text()).get("duration_by_test", {})
        items.sort(key=lambda item: durations.get(item.nodeid, 0.0))


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state, and the global default dtype is left as found."""
    seed_everything(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def font_paths():
    paths = discover_font_files(default_font_dirs(True, False, []))
    assert paths, "matplotlib ships fonts; none were found"
    return paths


@pytest.fixture(scope="session")
def glyph_bank(font_paths):
    """(bank (F,10,28,28), kept paths, verdicts) from matplotlib's fonts."""
    seed_everything(0)
    bank, kept, verdicts = build_glyph_bank(font_paths, max_fonts=N_FONTS, shuffle_seed=0)
    assert bank.shape == (N_FONTS, 10, 28, 28)
    return bank, kept, verdicts


@pytest.fixture(scope="session")
def fonts_spec():
    return FontsSpec(per_font_class_train=PER_FONT_CLASS_TRAIN, per_font_class_test=PER_FONT_CLASS_TEST,
                     ranges=PRESETS["easy"], seed=0)


@pytest.fixture(scope="session")
def fonts_data(glyph_bank, fonts_spec):
    """Both splits of a tiny FONTS dataset (numpy arrays)."""
    seed_everything(0)
    return make_fonts(glyph_bank[0], fonts_spec)


@pytest.fixture(scope="session")
def train_tensors(fonts_data):
    d = fonts_data["train"]
    return torch.from_numpy(d["images"]), torch.from_numpy(d["labels"])


@pytest.fixture(scope="session")
def test_tensors(fonts_data):
    d = fonts_data["test"]
    return torch.from_numpy(d["images"]), torch.from_numpy(d["labels"])


@pytest.fixture
def golden():
    """Compare texts word for word with their files under tests/golden/: `golden({path: text, ...})`. With
    UPDATE_GOLDEN set (`make golden`), the files are written instead and the test is skipped."""
    def check(files: dict[Path, str]) -> None:
        if os.environ.get("UPDATE_GOLDEN"):
            for path, text in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix == ".json":  # stored without the float noise the comparison ignores
                    text = json.dumps(without_noise(json.loads(text)), indent=2) + "\n"
                path.write_text(text)
            pytest.skip(f"wrote {', '.join(map(str, files))}: read the diff before committing it")
        for path, text in files.items():
            if path.suffix == ".json":  # numbers as numbers: equal to 1e-9 (relative) or 1e-12, not bit for bit
                assert json.loads(text) == approx_numbers(json.loads(path.read_text())), \
                    f"{path} differs: `make golden` rewrites it"
            else:
                assert text == path.read_text(), f"{path} differs: `make golden` rewrites it"
    return check


def without_noise(value):
    """`value` (parsed JSON) with every float rounded to 12 significant digits and those below 1e-12 in size
    written as 0.0 (no negative zero): well inside what `approx_numbers` compares to."""
    if isinstance(value, dict):
        return {k: without_noise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_noise(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        return 0.0 if abs(value) < 1e-12 else float(f"{value:.12g}")
    return value


def approx_numbers(value):
    """`value` (parsed JSON) with every float wrapped in pytest.approx: what a golden JSON file's numbers mean
    when the last bits of a sum differ between machines (BLAS, SIMD, thread counts)."""
    if isinstance(value, dict):
        return {k: approx_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx_numbers(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=1e-12)
    return value


@pytest.fixture(scope="session")
def trained_model(train_tensors):
    """A classifier trained normally for three epochs (about 97% test accuracy); returned in eval mode."""
    seed_everything(0)
    images, labels = train_tensors
    model, history = train_classifier(images, labels, TrainConfig(mode="normal", epochs=3, seed=0), progress=False)
    assert not model.training
    return model


@pytest.fixture(scope="session")
def attack_set(test_tensors):
    """150 test images (a fixed random subset) with their labels and dataset indices."""
    images, labels = test_tensors
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:150]
    return images[index].clone(), labels[index].clone(), index
