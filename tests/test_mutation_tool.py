"""scripts/mutation.py, the mutation-testing command: its equivalence file parses and every entry is complete, and
an entry matches a mutant exactly as documented (by module, function, original, mutated and dropped text)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutation", ROOT / "scripts" / "mutation.py")
mutation = importlib.util.module_from_spec(spec)
sys.modules["mutation"] = mutation  # its dataclasses look their module up there
spec.loader.exec_module(mutation)


def test_the_equivalence_file_names_known_modules_and_gives_every_entry_a_reason():
    modules, equivalents = mutation.read_spec()
    assert set(modules) == {"attacks", "onmanifold", "distances", "claims", "data", "datasets"}
    for tests in modules.values():
        assert tests and all((ROOT / t).is_file() for t in tests)
    assert equivalents and all(e.reason and e.module in modules for e in equivalents)


def test_an_incomplete_entry_is_refused_with_its_number(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[modules]\nattacks = ["tests/test_attacks.py"]\n\n[[equivalent]]\nmodule = "attacks"\n'
                    'function = "pgd"\nreason = "no text to match"\n')
    with pytest.raises(SystemExit, match="equivalent entry 1 needs module, function, reason and an original"):
        mutation.read_spec(path)
    path.write_text('[modules]\nattacks = ["tests/test_attacks.py"]\n\n[[equivalent]]\nmodule = "claims"\n'
                    'function = "*"\noriginal = "x"\nreason = "r"\n')
    with pytest.raises(SystemExit, match="names module 'claims', which is not under \\[modules\\]"):
        mutation.read_spec(path)


def test_entries_match_by_function_and_by_the_texts_they_name():
    line = mutation.Equivalent("data", "*", "r", original="h5py.File(path, \"r\")", mutant="h5py.File(path, )")
    assert line.matches("data", "read_split", 'with h5py.File(path, "r") as h5:', "with h5py.File(path, ) as h5:")
    assert not line.matches("claims", "read_split", 'with h5py.File(path, "r") as h5:', "h5py.File(path, )")
    assert not line.matches("data", "read_split", 'with h5py.File(path, "r") as h5:', 'h5py.File(path, "w")')
    one = mutation.Equivalent("data", "read_split", "r", original="x = 1")
    assert one.matches("data", "read_split", "x = 1", "x = 2") and not one.matches("data", "other", "x = 1", "x = 2")
    dropped = mutation.Equivalent("data", "*", "r", dropped="dtype=float")
    assert dropped.matches("data", "f", "np.asarray(v, dtype=float)", "np.asarray(v, )")
    assert not dropped.matches("data", "f", "np.asarray(v, dtype=float)", "np.asarray(v, dtype=float) + 1")


def test_only_entries_that_name_the_mutated_text_are_trusted_before_the_run():
    """An entry naming only the original line, or a dropped text, also matches a mutant that replaces the whole
    line (by None, say), which a test may kill; it is applied to survivors only."""
    assert not mutation.Equivalent("data", "*", "r", original="x = 1").precise
    dropped = mutation.Equivalent("data", "*", "r", original="x = f(dtype=float)", dropped="dtype=float")
    assert not dropped.precise and dropped.matches("data", "g", "x = f(dtype=float)", "x = None")
    assert mutation.Equivalent("data", "*", "r", original="x = 1", mutant="x = 2").precise
    several = mutation.Equivalent("data", "*", "r", mutant=["f(None)", "f(2)"])
    assert several.precise and several.matches("data", "g", "f(1)", "f(2)")
    assert not several.matches("data", "g", "f(1)", "None")


def test_mutant_names_give_their_function_and_diffs_their_lines():
    assert mutation.function_of("manifold_robustness.attacks.x_pgd__mutmut_3") == "pgd"
    assert mutation.function_of("manifold_robustness.onmanifold.xǁClassDecodersǁ__init____mutmut_4") \
        == "ClassDecoders.__init__"
    diff = "--- a\n+++ b\n@@ -1 +1 @@\n-    x = 1\n+    x = 2\n"
    assert mutation.changed_lines(diff) == ("x = 1", "x = 2")


def test_a_mutant_is_explained_when_killed_or_matched():
    assert not mutation.Mutant("n", "data", "f", "killed").unexplained
    assert not mutation.Mutant("n", "data", "f", "timeout").unexplained
    assert mutation.Mutant("n", "data", "f", "survived").unexplained
    matched = mutation.Mutant("n", "data", "f", "not checked", equivalent=mutation.Equivalent("data", "f", "r", "x"))
    assert not matched.unexplained
