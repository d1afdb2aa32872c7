"""Atomic writes: an interrupted writer leaves nothing that looks complete."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from manifold_robustness.io import atomic_path, h5_cause, read_json, write_json


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.pt"
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_keeps_the_old_file_until_the_new_one_is_complete(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("{broken")
            raise KeyboardInterrupt
    assert read_json(target) == {"a": 1}


def test_read_json_names_a_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        read_json(bad)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_every_kind_of_output_gets_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    """JSON, torch, HDF5, CSV and PNG outputs, each written through atomic_path, are readable as any new file of
    the user's would be: a group's project folder on a cluster can read them (mkstemp alone gives 0600)."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import torch

    writers = {
        "metrics.json": lambda tmp: tmp.write_text("{}"),
        "model.pt": lambda tmp: torch.save({"w": torch.zeros(2)}, tmp),
        "attack.h5": lambda tmp: h5py.File(tmp, "w").close(),
        "table.csv": lambda tmp: pd.DataFrame({"a": [1]}).to_csv(tmp, index=False),
        "figure.png": lambda tmp: plt.figure(figsize=(1, 1)).savefig(tmp, format="png"),
    }
    old = os.umask(umask)
    try:
        for name, write in writers.items():
            with atomic_path(tmp_path / name) as tmp:
                write(tmp)
    finally:
        os.umask(old)
        plt.close("all")
    assert {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in writers} == dict.fromkeys(writers, mode)


LOCK_ERROR = ("Unable to synchronously open file (unable to lock file, errno = 38, error message = 'Function not "
              "implemented')")


def test_a_file_system_without_locks_is_named_not_called_corrupt(tmp_path: Path, monkeypatch) -> None:
    """On NFS or Lustre without lock support h5py fails to open a good file; the error says so and does not tell the
    user to delete it. Other failures keep their advice."""
    import h5py

    from manifold_robustness.attack_io import load_success_rates
    from manifold_robustness.data import read_split

    def no_locks(*args, **kwargs):
        raise OSError(LOCK_ERROR)

    monkeypatch.setattr(h5py, "File", no_locks)
    for read in (lambda: read_split(tmp_path / "fonts.h5", "train"), lambda: load_success_rates(tmp_path / "pgd.h5")):
        with pytest.raises(RuntimeError, match="HDF5_USE_FILE_LOCKING=FALSE") as err:
            read()
        assert "does not support file locks" in str(err.value) and "delete it and rerun" not in str(err.value)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="delete it and rerun the data rule"):
        read_split(tmp_path / "absent.h5", "train")
    # A truncated file is what it says, though HDF5's message on it holds "sblock"
    truncated = OSError("Unable to synchronously open file (truncated file: eof = 1362544, sblock->base_addr = 0, "
                        "stored_eof = 2725088)")
    assert h5_cause(truncated) == "" and h5_cause(OSError(LOCK_ERROR)) != ""


@pytest.mark.parametrize("given, expected", [(None, "FALSE"), ("TRUE", "TRUE")])
def test_the_package_turns_hdf5_locking_off_unless_the_user_set_it(given: str | None, expected: str) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    if given is not None:
        env["HDF5_USE_FILE_LOCKING"] = given
    out = subprocess.run([sys.executable, "-c", "import os, manifold_robustness; "
                          "print(os.environ['HDF5_USE_FILE_LOCKING'])"], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == expected
