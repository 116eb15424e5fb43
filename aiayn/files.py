"""Writing files and folders so that nothing of the user's is lost.

The rules every command follows: it writes only into folders it created, empty ones, or its own
(an aiayn run, checkpoint or prepared data, holding nothing but what aiayn writes there) that the
user asked to replace; what it writes appears complete or not at all (built under a hidden
temporary name beside the target, then renamed into place); and replacing a folder swaps the new
one in with one atomic rename, so there is no moment when neither copy exists. Each rule is
checked again at the moment of the rename, not only when the command starts.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiayn.errors import InputError

_AT_FDCWD, _RENAME_NOREPLACE, _RENAME_EXCHANGE = -100, 1, 2
_HIDDEN_TAGS = ("partial-", "old-", "deleting")  # what aiayn's own hidden leftovers are called


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
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def write_output(path: Path, text: str) -> None:
    """Write a file the user named: through a symbolic link to its target, into a device or pipe
    as it is (/dev/stdout), a regular file atomically."""
    target = path.resolve()
    try:
        if target.exists() and not target.is_file():
            with open(target, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            write_atomic(target, text)
    except OSError as error:
        raise InputError(f"{path}: cannot be written ({error.strerror})") from None


def _renameat2(source: Path, target: Path, flags: int) -> bool | None:
    """Linux renameat2: True when done, None where the system or file system cannot do it;
    raises OSError for other failures (EEXIST for RENAME_NOREPLACE onto an existing path)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        renameat2 = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return None
    raise OSError(code, os.strerror(code), str(target))


def _swap(a: Path, b: Path) -> None:
    """Exchange two folders; where the file system cannot do that atomically, move `b` aside to a
    hidden `.old` name first (recover_hidden restores it if a crash comes between the renames)."""
    if _renameat2(a, b, _RENAME_EXCHANGE):
        return
    old = b.parent / f".{b.name}.old-{os.getpid()}"
    b.rename(old)
    a.rename(b)
    old.rename(a)


def _install(staged: Path, target: Path, owned: Callable[[Path], bool] | None) -> None:
    """Move a complete `staged` folder to `target`: a new path, an empty folder, or (if `owned`
    says so now) an aiayn folder that is replaced. Anything else at `target` is left alone."""
    _fsync_tree(staged)
    if not target.exists() and not target.is_symlink():
        if _renameat2(staged, target, _RENAME_NOREPLACE) is None:
            staged.rename(target)  # no RENAME_NOREPLACE here: the check above has to do
    elif target.is_dir() and not any(target.iterdir()):
        _swap(staged, target)
        try:
            staged.rmdir()  # the empty folder the user gave
        except OSError:  # something was written into it meanwhile: put it back as it was
            _swap(staged, target)
            raise InputError(f"{target}: was empty, but files appeared in it while aiayn worked; nothing replaced")
    elif owned is not None and owned(target):
        _swap(staged, target)
        shutil.rmtree(staged)  # the replaced copy, now under the hidden name
    else:
        raise InputError(f"{target}: is not empty (or not an aiayn folder that may be replaced); nothing written")
    fsync_dir(target.parent)


@contextmanager
def building(target: Path, owned: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Build a folder for `target` in a new hidden sibling, yielded; on success it is installed
    (see _install), on any failure removed. `owned` allows replacing an aiayn folder at `target`."""
    target = Path(target).resolve()  # a symbolic link keeps pointing at the folder it names
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in abandoned_partials(target):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    staged = Path(tempfile.mkdtemp(prefix=partial_prefix(target), dir=target.parent))
    try:
        yield staged
        _install(staged, target, owned)
    except BaseException as error:
        if staged.exists():
            remove_tree(staged)
        if isinstance(error, OSError):  # a full disk, a folder without write permission, ...
            raise InputError(f"{target}: cannot be written ({error.strerror or error})") from None
        raise


def partial_prefix(target: Path) -> str:
    """The hidden name a writer of `target` stages under, beside it: `.NAME.partial-PID-`."""
    return f".{target.name}.partial-{os.getpid()}-"


def abandoned_partials(target: Path, idle_s: float = 0.0) -> Iterator[Path]:
    """What writers of `target` killed mid-way left beside it (their process is gone), never a link;
    with `idle_s`, only what nothing has written for that long (a writer on another machine that
    shares the folder is not a process here)."""
    prefix = f".{target.name}.partial-"
    for leftover in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = leftover.name[len(prefix):].split("-", 1)[0]
        if not re.fullmatch(r"[0-9]{1,9}", pid) or _alive(int(pid)) or leftover.is_symlink():
            continue
        try:
            idle = time.time() - leftover.stat().st_mtime
        except OSError:  # removed by someone else meanwhile
            continue
        if idle >= idle_s:
            yield leftover


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_tree(folder: Path) -> None:
    """Make every file written under `folder`, and the folders' entries, durable."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


def recover_hidden(folder: Path) -> None:
    """Clean up after a writer killed mid-way in `folder`: a `.NAME.old-*` copy whose NAME is
    missing is renamed back (it is the one good copy); other hidden leftovers are removed."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if not path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue
        name, _, tag = path.name[1:].rpartition(".")
        if tag.startswith("old-") and not (folder / name).exists():
            path.rename(folder / name)
        elif tag.startswith(_HIDDEN_TAGS):
            shutil.rmtree(path, ignore_errors=True)


def holds_only(path: Path, names: Callable[[str], bool]) -> bool:
    """Whether every entry of the folder is one aiayn writes there (`names`) or its own hidden leftover."""
    return all(names(p.name) or (p.name.startswith(".") and p.name[1:].rpartition(".")[2].startswith(_HIDDEN_TAGS))
               for p in path.iterdir())


def check_output_dir(path: Path, what: str, owned: Callable[[Path], bool], overwrite: bool = False,
                     hint: str = "") -> None:
    """Refuse, before any work, an output folder the command may not write: anything but a new or
    empty folder, or (with `overwrite`) one that holds an aiayn `what` and nothing else (`owned`)."""
    resolved = path.resolve()
    if resolved == Path.cwd() or resolved in Path.cwd().parents:
        raise InputError(f"{path}: is the current folder or holds it; choose a new folder")
    if not path.exists():
        if path.parent.exists() and not path.parent.is_dir():
            raise InputError(f"{path}: {path.parent} is not a folder")
        return
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder")
    if not any(path.iterdir()):
        return
    if not owned(path):
        raise InputError(f"{path}: folder exists, is not empty and is not an aiayn {what} (or holds files aiayn "
                         "did not write there); choose a new or empty folder")
    if not overwrite:
        raise InputError(f"{path} already holds an aiayn {what}; pass --overwrite to replace it{hint}")


def remove_tree(path: Path) -> None:
    """Delete a folder this tool created, renaming it to a hidden name first, so a kill mid-way
    never leaves a half-deleted folder under its real name."""
    doomed = path.parent / f".{path.name}.deleting"
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed)


def read_json_object(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in `path`; `error` naming the file when it is missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as reason:
        raise error(f"{path}: corrupt JSON ({reason})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: corrupt (not a JSON object)")
    return value
