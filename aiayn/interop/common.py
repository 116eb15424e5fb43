"""What every conversion shares: the error it reports and the output folder it writes atomically."""
from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType


class InteropError(ValueError):
    """A folder or config aiayn cannot convert, or an output it must not overwrite; the message
    names the file, field or folder at fault."""


def optional_module(name: str) -> ModuleType:
    """transformers or ctranslate2, which only the exports need (the `interop` extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise InteropError(f"this needs {name}: pip install 'aiayn[interop]'") from None


def require_empty(out: Path) -> None:
    """Refuse an output that exists and is not an empty folder: a conversion never deletes a user's files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InteropError(f"{out}: exists and is not an empty folder; give a new one")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to write into; when the block succeeds it is renamed to `out`,
    when it fails it is deleted, so `out` is either complete or absent (never half-written)."""
    out = Path(out)
    require_empty(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        for file in staging.iterdir():
            _fsync(file)
        _fsync(staging)
        if out.exists():
            out.rmdir()  # empty (checked above): the rename needs the name free
        staging.rename(out)
        _fsync(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
