"""The study's grid: which training-set sizes N a config trains each dataset's training modes at.

Plain Python (no torch), so that the workflow can read it when it builds its plan.
"""

from __future__ import annotations

from collections.abc import Mapping


def n_grid(cfg: Mapping, dataset: str, mode: str) -> list[int]:
    """The N a dataset's mode is trained at, ascending: its own grid from `classifiers.n_train_per_mode` where
    the config gives one, else `classifiers.n_train`."""
    cls = cfg["classifiers"]
    return sorted(cls.get("n_train_per_mode", {}).get(dataset, {}).get(mode, cls["n_train"]))


def largest_n(cfg: Mapping) -> int:
    """The largest N any dataset's mode is trained at."""
    cls = cfg["classifiers"]
    per_mode = [n for grids in cls.get("n_train_per_mode", {}).values() for ns in grids.values() for n in ns]
    return max([*cls["n_train"], *per_mode])
