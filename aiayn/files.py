"""Writing files and folders so that nothing of the user's is lost.

The rules every command follows: it writes only into folders it created, empty ones, or its own
(an aiayn run or checkpoint) that the user asked to replace; what it writes appears complete or
not at all (built under a hidden temporary name, then renamed into place); and replacing a folder
swaps the new one in with one atomic rename, so there is no moment when neither copy exists.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from aiayn.errors import InputError

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write a whole file under a temporary name beside it, then rename it over `path`."""
    path = Path(path)
    temporary = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def staging_path(target: Path, tag: str = "partial") -> Path:
    """The hidden sibling a folder is built in before it is renamed to `target`."""
    return target.parent / f".{target.name}.{tag}-{os.getpid()}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def install_dir(staged: Path, target: Path) -> Path:
    """Move a complete folder from `staged` to `target`, replacing what `target` holds.

    An existing `target` is swapped with `staged` atomically and the old copy, now under the
    hidden staged name, is removed. Where the file system cannot swap, the old copy is first
    renamed to a hidden `.old` name, which `recover_hidden` restores if a crash comes between
    the two renames.
    """
    if not target.exists():
        staged.rename(target)
    elif _exchange(staged, target):
        shutil.rmtree(staged)
    else:
        old = staging_path(target, "old")
        target.rename(old)
        staged.rename(target)
        shutil.rmtree(old)
    fsync_dir(target.parent)
    return target


def recover_hidden(folder: Path) -> None:
    """Clean up after a writer killed mid-way in `folder`: a `.NAME.old-*` copy whose NAME is
    missing is renamed back (it is the one good copy); other hidden leftovers are removed."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if not path.name.startswith(".") or not path.is_dir():
            continue
        name, _, tag = path.name[1:].rpartition(".")
        if tag.startswith("old-") and not (folder / name).exists():
            path.rename(folder / name)
        elif tag.startswith(("partial-", "old-", "deleting")):
            shutil.rmtree(path, ignore_errors=True)


def check_output_dir(path: Path, what: str, owned: Callable[[Path], bool], overwrite: bool = False,
                     hint: str = "") -> None:
    """Refuse an output folder the command may not write: anything but a new or empty folder, or
    (with `overwrite`) one that holds an aiayn `what` (`owned` says which)."""
    if not path.exists():
        if path.parent.exists() and not path.parent.is_dir():
            raise InputError(f"{path}: {path.parent} is not a folder")
        return
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder")
    if not any(path.iterdir()):
        return
    if not owned(path):
        raise InputError(f"{path}: folder exists, is not empty and is not an aiayn {what}; "
                         "choose a new or empty folder")
    if not overwrite:
        raise InputError(f"{path} already holds an aiayn {what}; pass --overwrite to replace it{hint}")


def remove_tree(path: Path) -> None:
    """Delete a folder this tool created, renaming it to a hidden name first, so a kill mid-way
    never leaves a half-deleted folder under its real name."""
    doomed = path.parent / f".{path.name}.deleting"
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed)
