"""Atomic writes and small readers shared by every stage, so that an interrupted job never leaves a file
that looks complete."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` and rename it onto `path` only if the block succeeds.

    The rename is atomic on POSIX file systems; a killed process leaves at most a hidden `.tmp` file
    that no reader mistakes for the artifact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file readable by its owner alone; the artifact gets the mode any new file would (0666
    # less the umask), so that a group sharing a project folder can read the results.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def h5_cause(err: BaseException) -> str:
    """A sentence naming the real cause where an HDF5 open failed for want of file locks (a good file on a file
    system without lock support), else empty."""
    # HDF5's own words for it; a bare "lock" would also match a truncated file's "sblock->base_addr".
    if not re.search(r"unable to lock file|file locking", str(err), flags=re.IGNORECASE):
        return ""
    return ("; HDF5 could not lock the file: the file system does not support file locks (NFS, Lustre), and the "
            "file itself may be good. Set HDF5_USE_FILE_LOCKING=FALSE in the environment of every job (the package "
            "does unless the variable is set otherwise) instead of deleting it")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON artifact, naming the file if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and rerun the rule that makes it") from err
